"""The smoke test's pieces that do not need a server: reading the doctor's report, and the fleet table.

The whole path (doctor + real `claude -p` as each user against the real vLLM) runs in molecule/e2e.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, load_plugin, make_searchable, run_module

smoke = load_plugin("plugins/modules/claude_code_smoke.py", "claude_code_smoke_module")
report_filters = load_plugin("plugins/filter/smoke_report.py", "smoke_report_filters")
DOCTOR = REPO / "tools" / "claude-vllm-doctor"

GOOD_SETTINGS = {
    "model": "sonnet",
    "env": {
        "ANTHROPIC_BASE_URL": "http://gpu-01:8000",
        "ANTHROPIC_AUTH_TOKEN": "dummy",
        "ANTHROPIC_DEFAULT_OPUS_MODEL": "Qwen3.5-27B",
        "ANTHROPIC_DEFAULT_SONNET_MODEL": "Qwen3.5-27B",
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": "Qwen3.5-27B",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    },
}


def doctor_report(tmp_path, settings):
    """The real doctor's --offline --json report for a settings file."""
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings))
    run = subprocess.run([sys.executable, str(DOCTOR), "--settings", str(path), "--managed",
                          str(tmp_path / "no-managed.json"), "--offline", "--json"],
                         stdout=subprocess.PIPE, universal_newlines=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    return json.loads(run.stdout)


def test_settings_step_passes_the_notes_working_file(tmp_path):
    report = doctor_report(tmp_path, GOOD_SETTINGS)
    assert smoke.settings_step(report)["status"] == "ok"
    # Offline, the server steps are reported as not run, not as passed.
    assert smoke.server_step(report, "server.models", "models")["status"] == "skip"


def test_settings_step_names_each_broken_setting(tmp_path):
    settings = json.loads(json.dumps(GOOD_SETTINGS))
    settings["model"] = "Qwen3.5-27B"
    settings["env"]["ANTHROPIC_BASE_URL"] += "/v1"
    step = smoke.settings_step(doctor_report(tmp_path, settings))
    assert step["status"] == "FAIL"
    assert "model.alias" in step["detail"] and "base_url.path" in step["detail"]


def test_server_step_takes_the_worst_finding_and_the_latency():
    report = {"server": {"checked": True, "timings_ms": {"models": 12}},
              "findings": [{"id": "server.models", "severity": "ok", "problem": "listed"},
                           {"id": "server.models", "severity": "error", "problem": "not served"}]}
    assert smoke.server_step(report, "server.models", "models") == {
        "status": "FAIL", "latency_ms": 12, "detail": "not served"}


def test_tools_step_is_the_worst_of_the_tools_request_and_the_tool_call_check():
    """server.tools (the request with tools answered) and server.tool_call (the call came back parsed)."""
    findings = [{"id": "server.tools", "severity": "ok", "problem": "answered"},
                {"id": "server.tool_call", "severity": "error", "problem": "returned the call as plain text"}]
    report = {"server": {"checked": True, "timings_ms": {"tools": 40}}, "findings": findings}
    assert smoke.server_step(report, ("server.tools", "server.tool_call"), "tools") == {
        "status": "FAIL", "latency_ms": 40, "detail": "returned the call as plain text"}
    findings[1]["severity"] = "warning"
    assert smoke.server_step(report, ("server.tools", "server.tool_call"), "tools")["status"] == "warn"
    findings[1]["severity"] = "ok"
    assert smoke.server_step(report, ("server.tools", "server.tool_call"), "tools")["status"] == "ok"


def test_server_step_reports_the_blocking_network_error():
    report = {"server": {"checked": True, "timings_ms": {"health": 3}},
              "findings": [{"id": "server.health", "severity": "error", "problem": "Connection refused at x"}]}
    step = smoke.server_step(report, "server.messages", "messages")
    assert step["status"] == "FAIL" and "Connection refused" in step["detail"]


def test_finding_line_has_cause_symptom_and_fix():
    line = smoke.finding_line({"key": "ANTHROPIC_BASE_URL", "source": "/home/a/.claude/settings.json",
                               "problem": "ends in /v1", "symptom": "404", "fix": "drop /v1"})
    assert line == ("ANTHROPIC_BASE_URL [/home/a/.claude/settings.json]: ends in /v1 Symptom: 404 "
                    "Fix: drop /v1")


def test_clean_stderr_drops_only_the_known_harmless_line():
    text = "[claude-code:unrecognized_model] Qwen3.5-27B\nAPI Error: 401"
    assert smoke.clean_stderr(text) == "API Error: 401"


def user_result(name, ok, claude="ok", diagnosis=()):
    return {"user": name, "ok": ok, "base_url": "http://gpu-01:8000", "served_model_name": "Qwen3.5-27B",
            "diagnosis": list(diagnosis),
            "steps": {"settings": {"status": "ok", "latency_ms": None},
                      "models": {"status": "ok", "latency_ms": 4},
                      "messages": {"status": "ok" if ok else "FAIL", "latency_ms": 1520},
                      "tools": {"status": "ok" if ok else "FAIL", "latency_ms": 350},
                      "claude": {"status": claude, "latency_ms": 12400}}}


def test_table_lists_every_user_failures_and_hosts_without_result():
    hostvars = {
        "ws-1": {"smoke": {"users": [user_result("alice", True), user_result("bob", True)]}},
        "ws-2": {"smoke": {"users": [user_result("carol", False, "skip", ["ANTHROPIC_BASE_URL: ends in /v1"])]}},
        "ws-3": {},
    }
    lines = report_filters.smoke_table(hostvars, ["ws-1", "ws-2", "ws-3"], "smoke")
    assert lines[0].split() == ["HOST", "USER", "BASE", "URL", "SERVED", "NAME", "settings", "GET", "/v1/models",
                                "POST", "/v1/messages", "tool", "call", "claude", "-p", "RESULT"]
    assert lines[1].split()[:2] == ["ws-1", "alice"] and lines[1].endswith("PASS")
    assert "ok 4ms" in lines[1] and "ok 1.5s" in lines[1] and "ok 350ms" in lines[1] and "ok 12s" in lines[1]
    assert lines[3].endswith("FAIL") and "skip" in lines[3]
    assert "2 of 3 user(s) passed on 2 host(s)." in lines
    assert "ws-2 / carol: ANTHROPIC_BASE_URL: ends in /v1" in lines
    assert any(line.startswith("ws-3: no smoke result") for line in lines)
    assert report_filters.smoke_needs_attention(hostvars, ["ws-1", "ws-2", "ws-3"], "smoke") == ["ws-2", "ws-3"]


def test_table_shows_hosts_a_check_run_found_not_installed_without_attention():
    hostvars = {
        "ws-1": {"smoke": {"users": [user_result("alice", True)], "not_installed": []}},
        "new-laptop": {"smoke": {"users": [], "not_installed": ["/usr/local/bin/claude-vllm-doctor"]}},
    }
    lines = report_filters.smoke_table(hostvars, ["ws-1", "new-laptop"], "smoke")
    assert "1 of 1 user(s) passed on 1 host(s)." in lines
    assert ("new-laptop: not tested: /usr/local/bin/claude-vllm-doctor not installed yet (check mode; the run "
            "would install them).") in lines
    assert report_filters.smoke_needs_attention(hostvars, ["ws-1", "new-laptop"], "smoke") == []


def run_smoke_module(monkeypatch, tmp_path, check_mode):
    """The module's main() with these arguments; returns (result, failed)."""
    args = dict(users=["root"], doctor=str(tmp_path / "no-doctor"), claude=str(tmp_path / "no-claude"))
    exited = run_module(monkeypatch, smoke.main, args, check_mode=check_mode, remote_tmp=str(tmp_path))
    return exited.result, exited.failed


@pytest.mark.skipif(os.geteuid() != 0, reason="the module runs each test as its user: it needs root")
def test_check_mode_on_a_machine_not_installed_yet_tests_nothing_and_passes(monkeypatch, tmp_path):
    result, failed = run_smoke_module(monkeypatch, tmp_path, check_mode=True)
    assert not failed and result["ok"] and result["users"] == []
    assert result["not_installed"] == [str(tmp_path / "no-doctor"), str(tmp_path / "no-claude")]


@pytest.mark.skipif(os.geteuid() != 0, reason="the module runs each test as its user: it needs root")
def test_a_real_run_without_the_tools_fails_naming_the_fix(monkeypatch, tmp_path):
    result, failed = run_smoke_module(monkeypatch, tmp_path, check_mode=False)
    assert failed and "no-doctor" in result["msg"] and "Fix: run the claude_code role first" in result["msg"]


def processes_with(marker):
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if marker.encode() in handle.read():
                    found.append(entry)
        except OSError:
            continue
    return found


@pytest.mark.skipif(os.geteuid() != 0, reason="runs a command as another user")
def test_a_command_that_times_out_is_stopped_with_everything_it_started(tmp_path):
    import pwd
    # A child in the group, a grandchild that left it (setsid would leave the session too: not the user's
    # tools' way; a background job and a new process group are).
    script = "sleep 3011 & (set -m; sleep 3012 &) ; sleep 3013"
    rc, _out, _err, elapsed = smoke.run_as(pwd.getpwnam("nobody"), ["sh", "-c", script], timeout=1)
    assert rc is None and elapsed < 10000
    assert processes_with("sleep 301") == []


@pytest.mark.skipif(os.geteuid() != 0, reason="the module runs each test as its user: it needs root")
def test_a_hanging_doctor_fails_that_user_only_and_the_others_are_still_reported(monkeypatch, tmp_path):
    make_searchable(tmp_path)
    doctor = tmp_path / "doctor"
    report = json.dumps({"ok": False, "findings": [{"id": "server.health", "severity": "error",
                                                   "problem": "stand-in"}], "effective": {}})
    doctor.write_text("#!/bin/sh\n"
                      f'if [ "$USER" = nobody ]; then sleep 3021 & sleep 3022; fi\n'
                      f"echo '{report}'\n")
    doctor.chmod(0o755)
    monkeypatch.setattr(smoke, "doctor_wall_timeout", lambda module: 2)
    args = dict(users=["nobody", "daemon"], doctor=str(doctor), run_claude=False)
    outcome = run_module(monkeypatch, smoke.main, args, remote_tmp=str(tmp_path))
    assert not outcome.failed and not outcome.result["ok"]
    nobody, daemon = outcome.result["users"]
    assert nobody["steps"]["settings"]["status"] == "FAIL"
    assert "did not finish within 2 s as nobody" in nobody["diagnosis"][0] and "Fix:" in nobody["diagnosis"][0]
    assert daemon["doctor"]["findings"][0]["problem"] == "stand-in"
    assert processes_with("sleep 302") == []


# ---------------------------------------------------------------------------------------------------------
# The smoke result as node-exporter textfile metrics (the monitoring role's alerts and dashboard read them)

def test_smoke_metrics_one_line_per_user_and_parseable_by_promtool(tmp_path):
    import shutil

    report = load_plugin("plugins/filter/smoke_report.py", "smoke_report_metrics")
    text = report.smoke_metrics({"users": [{"user": "alice", "ok": True}, {"user": 'b"o\\b', "ok": False}]},
                                "ws-1", 1764590000.7)
    assert 'claude_vllm_fleet_smoke_success{workstation="ws-1",user="alice"} 1\n' in text
    assert 'claude_vllm_fleet_smoke_success{workstation="ws-1",user="b\\"o\\\\b"} 0\n' in text
    assert 'claude_vllm_fleet_smoke_last_run_timestamp_seconds{workstation="ws-1",user="alice"} 1764590000\n' in text
    promtool = shutil.which("promtool") or str(REPO / ".venv" / "bin" / "promtool")
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_smoke_metrics_of_a_host_without_users_is_only_the_headers():
    report = load_plugin("plugins/filter/smoke_report.py", "smoke_report_metrics")
    assert "} " not in report.smoke_metrics({}, "ws-1", 0)
