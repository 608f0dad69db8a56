"""plugins/filter/monitoring.py: Prometheus durations as seconds, and the dashboard's queries for Prometheus' API."""

from __future__ import annotations

import json

import pytest
from ansible.errors import AnsibleFilterError

from conftest import REPO, load_plugin

monitoring = load_plugin("plugins/filter/monitoring.py", "monitoring_filters")
DASHBOARD = REPO / "roles/monitoring/files/fleet-dashboard.json"


@pytest.mark.parametrize("value, seconds", [
    ("90s", 90), ("15m", 900), ("2d", 172800), ("1h30m", 5400), ("1w", 604800), ("1y", 31536000),
    ("500ms", 0.5), ("1m30s500ms", 90.5), ("0m", 0), ("0", 0), (" 5m ", 300),
])
def test_durations_in_seconds(value, seconds):
    assert monitoring.prometheus_duration_seconds(value) == seconds


@pytest.mark.parametrize("value", ["two days", "", "5", "5 m", "1m1h", "1.5h", "-5m", None, True, 3.5, "5M"])
def test_a_bad_duration_names_the_variable_and_the_fix(value):
    with pytest.raises(AnsibleFilterError) as caught:
        monitoring.prometheus_duration_seconds(value, "monitoring_alert_smoke_max_age")
    message = str(caught.value)
    assert message.startswith(f"monitoring_alert_smoke_max_age ({value!r}) is not a Prometheus duration")
    assert "Fix:" in message


def board(*panels):
    return {"panels": list(panels)}


def panel(title, *exprs, **extra):
    return dict(title=title, targets=[{"refId": chr(65 + i), "expr": e} for i, e in enumerate(exprs)], **extra)


def test_every_query_of_the_shipped_dashboard():
    queries = monitoring.dashboard_queries(DASHBOARD.read_text(), "5m")
    dashboard = json.loads(DASHBOARD.read_text())
    assert len(queries) == sum(len(p["targets"]) for p in dashboard["panels"])
    assert {q["panel"] for q in queries} == {p["title"] for p in dashboard["panels"]}
    assert all("$" not in q["expr"] for q in queries)
    assert any("[5m]" in q["expr"] for q in queries)


def test_rate_interval_is_replaced_in_both_spellings_and_rows_are_walked():
    dashboard = board(
        panel("a", "rate(x[$__rate_interval])"),
        {"type": "row", "title": "row", "collapsed": True,
         "panels": [panel("b", "rate(y[${__rate_interval}])", "z")]},
        panel("c"),  # no query
    )
    assert monitoring.dashboard_queries(dashboard, "2m") == [
        {"panel": "a", "expr": "rate(x[2m])"}, {"panel": "b", "expr": "rate(y[2m])"}, {"panel": "b", "expr": "z"}]


def test_the_default_rate_interval_is_one_minute():
    assert monitoring.dashboard_queries(board(panel("a", "rate(x[$__rate_interval])"))) == [
        {"panel": "a", "expr": "rate(x[1m])"}]


def test_label_replace_references_are_not_grafana_variables():
    expr = 'label_replace(up, "a", "$1", "b", "(.*)")'
    assert monitoring.dashboard_queries(board(panel("a", expr)))[0]["expr"] == expr


@pytest.mark.parametrize("expr", ['up{instance=~"$instance"}', "rate(x[$__interval])", 'up{job="${job}"}',
                                  "up{job='[[job]]'}"])
def test_other_grafana_variables_are_refused(expr):
    with pytest.raises(AnsibleFilterError, match="panel 'p' queries with the Grafana variable"):
        monitoring.dashboard_queries(board(panel("p", expr)))


@pytest.mark.parametrize("dashboard, message", [("{not json", "not JSON"), ([], "got list"), (7, "got int")])
def test_what_is_not_a_dashboard_is_refused(dashboard, message):
    with pytest.raises(AnsibleFilterError, match=message):
        monitoring.dashboard_queries(dashboard)


def test_a_bad_rate_interval_is_refused():
    with pytest.raises(AnsibleFilterError, match="rate_interval"):
        monitoring.dashboard_queries(board(panel("a", "up")), "soon")


def test_the_filters_are_registered():
    assert set(monitoring.FilterModule().filters()) == {"prometheus_duration_seconds", "dashboard_queries"}
