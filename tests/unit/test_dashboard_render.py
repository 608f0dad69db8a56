"""tools/dashboard_render.py: the dashboard drawn as SVG from Prometheus' answers (recorded ones, see
tests/fixtures/dashboard/README.md), and the command line against a stand-in Prometheus serving them."""

from __future__ import annotations

import json
import threading
import urllib.parse
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import REPO, load_plugin

render = load_plugin("tools/dashboard_render.py", "fleet_dashboard_render")
FIXTURES = REPO / "tests/fixtures/dashboard"
DASHBOARD = json.loads((REPO / "roles/monitoring/files/fleet-dashboard.json").read_text())
SVG = "{http://www.w3.org/2000/svg}"
RECORDED = {  # dashboard panel title: recorded answer to its query
    "Gateway backend: healthy servers": "query_range_healthy.json",
    "Gateway servers: state": "query_range_state.json",
    "Gateway 5xx share": "query_range_5xx.json",
}


def answer(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def recorded_range() -> tuple[float, float]:
    stamps = [stamp for name in RECORDED.values() for item in answer(name)["data"]["result"]
              for stamp, _ in item["values"]]
    return min(stamps), max(stamps)


def panels_with_recorded_data() -> list[dict]:
    panels = []
    for panel in render.panel_queries(DASHBOARD, "10s"):
        series = []
        if panel["title"] in RECORDED:
            series = render.series_of(answer(RECORDED[panel["title"]]), panel["targets"][0]["legend"])
        panels.append(dict(panel, series=series, error=""))
    return panels


def test_the_dashboard_panels_and_their_queries():
    panels = render.panel_queries(DASHBOARD, "2m")
    assert [panel["title"] for panel in panels] == [panel["title"] for panel in DASHBOARD["panels"]]
    exprs = [target["expr"] for panel in panels for target in panel["targets"]]
    assert all("$" not in expr for expr in exprs) and any("[2m]" in expr for expr in exprs)


def test_series_of_a_recorded_answer():
    series = render.series_of(answer("query_range_state.json"), "{{fleet_host}} {{server}} {{state}}")
    assert [item["name"] for item in series] == ["gw-01 gpu-01-main UP", "gw-01 gpu-02-main DOWN",
                                                 "gw-01 gpu-02-main UP"]
    assert [len(item["points"]) for item in series] == [35, 20, 15]
    healthy = render.series_of(answer("query_range_healthy.json"), "")
    assert healthy[0]["name"].startswith('haproxy_backend_active_servers{fleet_host="gw-01"')
    assert [value for _, value in healthy[0]["points"]][14:16] == [2.0, 1.0]


def test_a_failed_answer_is_an_error():
    with pytest.raises(ValueError, match="bad_data"):
        render.series_of({"status": "error", "errorType": "bad_data", "error": "parse error"}, "")


def test_the_svg_is_well_formed_and_holds_every_panel():
    start, end = recorded_range()
    svg = render.render_svg(panels_with_recorded_data(), start, end, DASHBOARD["title"])
    root = ET.fromstring(svg)
    texts = [element.text for element in root.iter(f"{SVG}text")]
    for panel in DASHBOARD["panels"]:
        assert panel["title"] in texts
    assert DASHBOARD["title"] in texts
    # the recorded series are drawn: one line each for the two time-series panels, rows for the table
    lines = list(root.iter(f"{SVG}polyline"))
    assert len(lines) == 2
    healthy = [line for line in lines if len(line.get("points").split()) == 35]
    assert healthy, [len(line.get("points").split()) for line in lines]
    assert "gw-01 gpu-02-main DOWN" in texts and "No data" in texts


def test_points_stay_inside_their_plot():
    start, end = recorded_range()
    root = ET.fromstring(render.render_svg(panels_with_recorded_data(), start, end))
    for line in root.iter(f"{SVG}polyline"):
        for pair in line.get("points").split():
            x, y = map(float, pair.split(","))
            assert render.PLOT_LEFT <= x <= render.PLOT_LEFT + render.PLOT_WIDTH
            assert render.PLOT_TOP <= y <= render.PLOT_TOP + render.PLOT_HEIGHT


def test_titles_and_names_are_escaped():
    panel = {"title": "a <b> & c", "type": "timeseries", "unit": "short",
             "series": [{"name": 'x{a="<1>"}', "points": [(0.0, 1.0), (60.0, 2.0)]}]}
    root = ET.fromstring(render.render_svg([panel], 0, 60, "t & t"))
    assert "a <b> & c" in [element.text for element in root.iter(f"{SVG}text")]


@pytest.mark.parametrize("value, unit, text", [
    (0.953, "percentunit", "95.3%"), (0.25, "s", "250ms"), (14.75, "s", "14.8s"), (3.1, "reqps", "3.1 req/s"),
    (12345, "short", "12.3k"), (0, "short", "0"),
])
def test_values_in_the_panels_unit(value, unit, text):
    assert render.format_value(value, unit) == text


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("5m", 300), ("1h30m", 5400), ("2d", 172800)])
def test_durations(text, seconds):
    assert render.duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5 m", "m5", "1m1h"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError):
        render.duration_seconds(text)


@pytest.fixture
def prometheus():
    """A stand-in Prometheus answering query_range with the recorded answers, by query; records what it was asked."""
    by_expr = {}
    for panel in render.panel_queries(DASHBOARD, "10s"):
        if panel["title"] in RECORDED:
            by_expr[panel["targets"][0]["expr"]] = answer(RECORDED[panel["title"]])
    asked = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            asked.append((url.path, query))
            body = by_expr.get(query.get("query"), {"status": "success",
                                                     "data": {"resultType": "matrix", "result": []}})
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", asked
    server.shutdown()
    server.server_close()


def test_the_command_line_asks_every_query_over_the_range_and_writes_the_svg(prometheus, tmp_path, capsys):
    url, asked = prometheus
    start, end = recorded_range()
    out = tmp_path / "dashboard.svg"
    assert render.main(["--prometheus", url, "--range", f"{int(end - start)}s", "--step", "2s",
                        "--rate-interval", "10s", "--end", str(end), "--out", str(out)]) == 0
    expected = [target["expr"] for panel in render.panel_queries(DASHBOARD, "10s") for target in panel["targets"]]
    assert [query["query"] for _, query in asked] == expected
    assert {path for path, _ in asked} == {"/api/v1/query_range"}
    assert all(float(query["start"]) == start and float(query["end"]) == end and query["step"] == "2"
               for _, query in asked)
    root = ET.fromstring(out.read_text())
    assert len(list(root.iter(f"{SVG}polyline"))) == 2
    assert "without data" in capsys.readouterr().out


def test_a_table_shows_the_series_current_at_the_end_with_the_panels_value_mappings():
    start, end = recorded_range()
    state = [panel for panel in panels_with_recorded_data() if panel["title"] == "Gateway servers: state"]
    texts = [element.text for element in ET.fromstring(render.render_svg(state, start, end)).iter(f"{SVG}text")]
    assert "gw-01 gpu-02-main DOWN" in texts and "gw-01 gpu-01-main UP" in texts
    assert "gw-01 gpu-02-main UP" not in texts  # gone before the end of the range
    assert texts.count("current") == 2


def test_smoke_results_read_passed_or_failed():
    smoke = [panel for panel in render.panel_queries(DASHBOARD) if panel["title"] == "Workstation smoke result"][0]
    smoke["series"] = [{"name": "ws-01 alice", "points": [(0.0, 1.0), (60.0, 0.0)]},
                       {"name": "ws-02 bob", "points": [(0.0, 1.0), (60.0, 1.0)]}]
    root = ET.fromstring(render.render_svg([smoke], 0, 60))
    values = {element.text: element.get("fill") for element in root.iter(f"{SVG}text")}
    assert values["FAILED"] == "#c62828" and values["passed"] == "#2e7d32"
