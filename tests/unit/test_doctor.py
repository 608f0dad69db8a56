"""Offline checks of tools/claude-vllm-doctor, with settings files built in tmp_path.

The online checks talk to a real vLLM server; they were verified by hand (tools/README.md) and run
automatically in the end-to-end Molecule scenario. The only server here is a hostile one (a real local HTTP
server answering garbage), to show that no answer makes the doctor crash or print a secret.
"""

from __future__ import annotations

import builtins
import copy
import errno
import glob
import json
import os
import random
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader

import pytest

from conftest import REPO, load_plugin, serve

DOCTOR = REPO / "tools" / "claude-vllm-doctor"
SERVED = "Qwen3.5-27B"

# The field notes' working ~/.claude/settings.json, verbatim.
WORKING = {
    "model": "sonnet",
    "env": {
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:8000",
        "ANTHROPIC_AUTH_TOKEN": "dummy",
        "ANTHROPIC_DEFAULT_OPUS_MODEL": SERVED,
        "ANTHROPIC_DEFAULT_SONNET_MODEL": SERVED,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": SERVED,
        "API_TIMEOUT_MS": "3000000",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_ATTRIBUTION_HEADER": "0",
    },
}
CLI_MODEL_ISSUE = "There's an issue with the selected model"


def load_doctor():
    loader = SourceFileLoader("claude_vllm_doctor", str(DOCTOR))
    spec = spec_from_loader("claude_vllm_doctor", loader)
    module = module_from_spec(spec)
    loader.exec_module(module)
    return module


doctor = load_doctor()
smoke = load_plugin("plugins/modules/claude_code_smoke.py", "claude_code_smoke_module")


def settings(**env_changes):
    data = copy.deepcopy(WORKING)
    for key, value in env_changes.items():
        if value is None:
            data["env"].pop(key, None)
        else:
            data["env"][key] = value
    return data


def write(path, data):
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=2))
    return path


def run(tmp_path, user=None, managed=None, environ=None, capsys=None, project=None):
    """Run main() --offline --json (with --project DIR when given, else --no-project); return (exit code, report)."""
    user_path = tmp_path / "settings.json"
    managed_path = tmp_path / "managed-settings.json"
    if user is not None:
        write(user_path, user)
    if managed is not None:
        write(managed_path, managed)
    project_args = ["--project", str(project)] if project is not None else ["--no-project"]
    code = doctor.main(["--settings", str(user_path), "--managed", str(managed_path), "--offline", "--json"] +
                       project_args, environ=environ or {})
    out = capsys.readouterr().out
    return code, json.loads(out)


def errors(report):
    return [f for f in report["findings"] if f["severity"] == "error"]


def only_error(report, check_id, key):
    found = errors(report)
    assert [f["id"] for f in found] == [check_id], json.dumps(found, indent=1)
    assert found[0]["key"] == key
    assert found[0]["fix"]
    assert found[0]["symptom"]
    return found[0]


def test_working_settings_have_no_error(tmp_path, capsys):
    code, report = run(tmp_path, WORKING, capsys=capsys)
    assert code == 0
    assert report["ok"] is True and report["exit_code"] == 0
    assert errors(report) == []
    assert [f for f in report["findings"] if f["severity"] == "warning"] == []
    assert report["schema"] == "claude-vllm-doctor/1"
    assert report["effective"] == {"max_output_tokens": 32000, "model": "sonnet",
                                   "base_url": "http://127.0.0.1:8000", "served_model_name": SERVED,
                                   "auth_token": "********"}
    assert report["server"] == {"checked": False}
    assert [s["status"] for s in report["settings"]] == ["loaded", "missing"]
    assert report["summary"]["error"] == 0
    for finding in report["findings"]:
        assert set(finding) == {"id", "severity", "key", "source", "source_kind", "value", "problem", "symptom",
                                "fix"}
    budget = [f for f in report["findings"] if f["id"] == "output_budget.offline"][0]
    assert budget["severity"] == "info" and "57000" in budget["problem"]


def test_human_output_of_working_settings(tmp_path, capsys):
    path = write(tmp_path / "settings.json", WORKING)
    code = doctor.main(["--settings", str(path), "--managed", str(tmp_path / "none.json"), "--offline"], environ={})
    out = capsys.readouterr().out
    assert code == 0
    assert "0 error(s)" in out and "ERROR" not in out
    assert "dummy" not in out


def test_base_url_ending_in_v1(tmp_path, capsys):
    code, report = run(tmp_path, settings(ANTHROPIC_BASE_URL="http://127.0.0.1:8000/v1"), capsys=capsys)
    assert code == 1
    finding = only_error(report, "base_url.path", "ANTHROPIC_BASE_URL")
    assert "/v1/v1/messages" in finding["problem"]
    assert CLI_MODEL_ISSUE in finding["symptom"]
    assert "http://127.0.0.1:8000" in finding["fix"] and "/v1" not in finding["fix"]
    assert finding["source"] == str(tmp_path / "settings.json") and finding["source_kind"] == "user"


@pytest.mark.parametrize("url, check_id", [
    ("127.0.0.1:8000", "base_url.scheme"),
    ("http://", "base_url.host"),
    ("http://gpu-01:8000/api", "base_url.path"),
    ("http://gpu-01:8000?x=1", "base_url.path"),
    (" http://gpu-01:8000", "base_url.whitespace"),
    ("", "base_url.missing"),
    (None, "base_url.missing"),
])
def test_bad_base_urls(tmp_path, capsys, url, check_id):
    code, report = run(tmp_path, settings(ANTHROPIC_BASE_URL=url), capsys=capsys)
    assert code == 1
    only_error(report, check_id, "ANTHROPIC_BASE_URL")


def test_trailing_slash_is_only_a_note(tmp_path, capsys):
    code, report = run(tmp_path, settings(ANTHROPIC_BASE_URL="http://127.0.0.1:8000/"), capsys=capsys)
    assert code == 0
    note = [f for f in report["findings"] if f["id"] == "base_url.trailing_slash"]
    assert note and note[0]["severity"] == "info"


def test_served_id_in_model(tmp_path, capsys):
    data = settings()
    data["model"] = SERVED
    code, report = run(tmp_path, data, capsys=capsys)
    assert code == 1
    finding = only_error(report, "model.alias", "model")
    assert "served model id" in finding["problem"]
    assert CLI_MODEL_ISSUE + " (" + SERVED + ")" in finding["symptom"]
    assert "\"model\": \"sonnet\"" in finding["fix"]


def test_served_id_in_model_without_mapping(tmp_path, capsys):
    """The notes' attempt 2 as written: only "model" carries the id."""
    data = {"model": SERVED, "env": {"ANTHROPIC_BASE_URL": "http://127.0.0.1:8000", "ANTHROPIC_AUTH_TOKEN": "dummy",
                                     "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}}
    code, report = run(tmp_path, data, capsys=capsys)
    assert code == 1
    ids = {f["id"] for f in errors(report)}
    assert {"model.alias", "tiers.missing"} <= ids


def test_unequal_tiers(tmp_path, capsys):
    """Tiers on their own models (the fleet's served_model_tiers): offline an info; online every name is checked."""
    code, report = run(tmp_path, settings(ANTHROPIC_DEFAULT_HAIKU_MODEL="Qwen3-0.6B"), capsys=capsys)
    assert code == 0 and errors(report) == []
    (finding,) = [f for f in report["findings"] if f["id"] == "tiers.unequal"]
    assert finding["severity"] == "info"
    assert "Qwen3-0.6B" in finding["problem"] and SERVED in finding["problem"]
    assert "served_model_tiers" in finding["fix"] and "served-model-name" in finding["fix"]
    assert report["effective"]["served_model_name"] == SERVED  # the selected (sonnet) tier's
    assert "tiers.mapping" not in {f["id"] for f in report["findings"]}


def test_tiers_with_slash(tmp_path, capsys):
    slashed = "Qwen/" + SERVED
    code, report = run(tmp_path, settings(ANTHROPIC_DEFAULT_OPUS_MODEL=slashed, ANTHROPIC_DEFAULT_SONNET_MODEL=slashed,
                                          ANTHROPIC_DEFAULT_HAIKU_MODEL=slashed), capsys=capsys)
    assert code == 1
    found = errors(report)
    assert {f["id"] for f in found} == {"tiers.slash"}
    assert {f["key"] for f in found} == set(doctor.TIER_KEYS.values())
    assert "--served-model-name " + SERVED in found[0]["fix"]


def test_tier_with_whitespace(tmp_path, capsys):
    code, report = run(tmp_path, settings(ANTHROPIC_DEFAULT_OPUS_MODEL="Qwen 3.5",
                                          ANTHROPIC_DEFAULT_SONNET_MODEL="Qwen 3.5",
                                          ANTHROPIC_DEFAULT_HAIKU_MODEL="Qwen 3.5"), capsys=capsys)
    assert code == 1
    assert {f["id"] for f in errors(report)} == {"tiers.whitespace"}


def test_selected_tier_missing_is_an_error_others_a_warning(tmp_path, capsys):
    code, report = run(tmp_path, settings(ANTHROPIC_DEFAULT_SONNET_MODEL=None), capsys=capsys)
    assert code == 1
    only_error(report, "tiers.missing", "ANTHROPIC_DEFAULT_SONNET_MODEL")
    code, report = run(tmp_path, settings(ANTHROPIC_DEFAULT_OPUS_MODEL=None, ANTHROPIC_DEFAULT_HAIKU_MODEL=None),
                       capsys=capsys)
    assert code == 0
    warned = sorted(f["key"] for f in report["findings"] if f["severity"] == "warning")
    assert warned == ["ANTHROPIC_DEFAULT_HAIKU_MODEL", "ANTHROPIC_DEFAULT_OPUS_MODEL"]
    assert report["effective"]["served_model_name"] == SERVED


def test_traffic_flag_removed(tmp_path, capsys):
    code, report = run(tmp_path, settings(CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=None), capsys=capsys)
    assert code == 1
    finding = only_error(report, "traffic.flag", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC")
    assert "Intermittent" in finding["symptom"]
    assert '"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"' in finding["fix"]


def test_traffic_flag_zero(tmp_path, capsys):
    code, report = run(tmp_path, settings(CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="0"), capsys=capsys)
    assert code == 1
    only_error(report, "traffic.flag", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC")


def test_api_key_instead_of_auth_token(tmp_path, capsys):
    code, report = run(tmp_path, settings(ANTHROPIC_AUTH_TOKEN=None, ANTHROPIC_API_KEY="dummy-secret"),
                       capsys=capsys)
    assert code == 1
    found = {f["id"]: f for f in errors(report)}
    assert set(found) == {"auth.token", "auth.api_key"}
    assert found["auth.api_key"]["key"] == "ANTHROPIC_API_KEY"
    assert "x-api-key" in found["auth.api_key"]["symptom"] and "401" in found["auth.api_key"]["symptom"]
    assert "ANTHROPIC_AUTH_TOKEN" in found["auth.api_key"]["fix"]
    assert found["auth.api_key"]["value"] == "********"
    assert "dummy-secret" not in json.dumps(report)


def test_token_is_never_printed(tmp_path, capsys):
    secret = "s3cr3t-token-value"
    path = write(tmp_path / "settings.json", settings(ANTHROPIC_AUTH_TOKEN=secret, ANTHROPIC_API_KEY=secret))
    for extra in ([], ["--json"]):
        doctor.main(["--settings", str(path), "--managed", str(tmp_path / "none"), "--offline"] + extra, environ={})
        assert secret not in capsys.readouterr().out


def test_custom_model_option_only(tmp_path, capsys):
    """The notes' attempt 4: the documented variable and a base URL, nothing else."""
    data = {"env": {"ANTHROPIC_CUSTOM_MODEL_OPTION": SERVED, "ANTHROPIC_BASE_URL": "http://127.0.0.1:8000"}}
    code, report = run(tmp_path, data, capsys=capsys)
    assert code == 1
    found = {f["id"]: f for f in errors(report)}
    assert "custom_option.alone" in found
    finding = found["custom_option.alone"]
    assert finding["key"] == "ANTHROPIC_CUSTOM_MODEL_OPTION"
    assert CLI_MODEL_ISSUE in finding["symptom"]
    assert "ANTHROPIC_DEFAULT_" in finding["fix"]
    assert {"tiers.missing", "traffic.flag", "auth.token"} <= set(found)


def test_custom_model_option_with_mapping_is_a_warning(tmp_path, capsys):
    code, report = run(tmp_path, settings(ANTHROPIC_CUSTOM_MODEL_OPTION=SERVED), capsys=capsys)
    assert code == 0
    assert [f["id"] for f in report["findings"] if f["severity"] == "warning"] == ["custom_option.redundant"]


def test_model_overrides(tmp_path, capsys):
    code, report = run(tmp_path, settings(ANTHROPIC_MODEL=SERVED, ANTHROPIC_SMALL_FAST_MODEL="claude-3-5-haiku"),
                       capsys=capsys)
    assert code == 1
    assert {f["id"] for f in errors(report)} == {"override.model", "override.small_fast"}
    code, report = run(tmp_path, settings(ANTHROPIC_MODEL="sonnet", ANTHROPIC_SMALL_FAST_MODEL=SERVED), capsys=capsys)
    assert code == 0
    assert {f["id"] for f in report["findings"] if f["severity"] == "warning"} == {"override.model",
                                                                                  "override.small_fast"}


def test_shell_environment_counts_where_settings_are_silent(tmp_path, capsys):
    code, report = run(tmp_path, WORKING, environ={"ANTHROPIC_API_KEY": "x", "HOME": "/root"}, capsys=capsys)
    assert code == 1
    finding = only_error(report, "auth.api_key", "ANTHROPIC_API_KEY")
    assert finding["source"] == "environment"


@pytest.mark.parametrize("value, severity", [("16000", "ok"), ("abc", "error"), ("0", "error")])
def test_output_budget(tmp_path, capsys, value, severity):
    code, report = run(tmp_path, settings(CLAUDE_CODE_MAX_OUTPUT_TOKENS=value), capsys=capsys)
    assert code == (1 if severity == "error" else 0)
    if severity == "ok":
        assert report["effective"]["max_output_tokens"] == 16000
        note = [f for f in report["findings"] if f["id"] == "output_budget.offline"][0]
        assert "41000" in note["problem"]
    else:
        only_error(report, "output_budget.invalid", "CLAUDE_CODE_MAX_OUTPUT_TOKENS")


def test_non_string_env_value_is_a_warning(tmp_path, capsys):
    code, report = run(tmp_path, settings(CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1), capsys=capsys)
    assert code == 0
    assert [f["id"] for f in report["findings"] if f["severity"] == "warning"] == ["env.not_string"]


def test_invalid_json(tmp_path, capsys):
    text = json.dumps(WORKING, indent=2).replace('"0"\n', '"0",\n')  # trailing comma
    code, report = run(tmp_path, text, capsys=capsys)
    assert code == 1
    found = {f["id"]: f for f in errors(report)}
    assert "settings.invalid_json" in found
    finding = found["settings.invalid_json"]
    assert str(tmp_path / "settings.json") in finding["problem"] and "line" in finding["problem"]
    assert "json.tool" in finding["fix"]
    assert report["settings"][0]["status"] == "invalid_json"


def test_missing_file(tmp_path, capsys):
    code, report = run(tmp_path, None, capsys=capsys)
    assert code == 1
    assert report["settings"][0]["status"] == "missing"
    assert "settings.missing" in {f["id"] for f in errors(report)}


def test_unreadable_file(tmp_path, capsys):
    if os.geteuid() == 0:
        target = tmp_path / "settings.json"
        target.mkdir()  # root reads any mode: a directory is unreadable as a file for everyone
    else:
        target = write(tmp_path / "settings.json", WORKING)
        target.chmod(0)
    code, report = run(tmp_path, None, capsys=capsys)
    assert code == 1
    assert "settings.unreadable" in {f["id"] for f in errors(report)}
    assert report["settings"][0]["status"] == "unreadable"


@pytest.mark.parametrize("content, check_id", [("[]", "settings.not_an_object"),
                                               ('{"env": ["x"]}', "settings.env_not_object")])
def test_wrong_shapes(tmp_path, capsys, content, check_id):
    code, report = run(tmp_path, content, capsys=capsys)
    assert code == 1
    assert check_id in {f["id"] for f in errors(report)}


def test_managed_file_overrides_user_file(tmp_path, capsys):
    managed = {"env": {"ANTHROPIC_BASE_URL": "http://gpu-01:8000/v1"}}
    code, report = run(tmp_path, WORKING, managed, capsys=capsys)
    assert code == 1
    finding = only_error(report, "base_url.path", "ANTHROPIC_BASE_URL")
    assert finding["source"] == str(tmp_path / "managed-settings.json")
    assert finding["source_kind"] == "managed"
    assert report["effective"]["base_url"] == "http://gpu-01:8000/v1"
    # keys the managed file does not set still come from the user file
    token = [f for f in report["findings"] if f["id"] == "auth.token"][0]
    assert token["severity"] == "ok" and token["source_kind"] == "user"


def test_managed_model_wins(tmp_path, capsys):
    code, report = run(tmp_path, WORKING, {"model": SERVED}, capsys=capsys)
    assert code == 1
    finding = only_error(report, "model.alias", "model")
    assert finding["source_kind"] == "managed"


def test_managed_file_alone_is_enough(tmp_path, capsys):
    code, report = run(tmp_path, None, WORKING, capsys=capsys)
    assert code == 0
    assert [f["severity"] for f in report["findings"] if f["id"] == "settings.user_missing"] == ["info"]


def test_invalid_managed_file(tmp_path, capsys):
    code, report = run(tmp_path, WORKING, "{not json", capsys=capsys)
    assert code == 1
    finding = only_error(report, "settings.invalid_json", "managed settings")
    assert finding["source_kind"] == "managed"


@pytest.mark.parametrize("argv", [["--timeout", "0"], ["--timeout", "x"], ["--bogus"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        doctor.main(argv, environ={})
    assert exc.value.code == 2


def test_unusable_url_skips_server_checks(tmp_path, capsys):
    path = write(tmp_path / "settings.json", settings(ANTHROPIC_BASE_URL="gpu-01:8000"))
    doctor.main(["--settings", str(path), "--managed", str(tmp_path / "none"), "--json"], environ={})
    report = json.loads(capsys.readouterr().out)
    assert report["server"] == {"checked": False}
    assert "server.skipped" in {f["id"] for f in report["findings"]}


def oldest_python():
    """The oldest Python 3 on the machine (pyenv's versions, else python3.9/3.10 on PATH)."""
    found = []
    for path in glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3")):
        match = re.search(r"/3\.(\d+)\.(\d+)", path)
        if match:
            found.append(((3, int(match.group(1)), int(match.group(2))), path))
    if not found:
        for minor in (9, 10):
            path = "/usr/bin/python3.{}".format(minor)
            if os.path.exists(path):
                found.append(((3, minor, 0), path))
    return [path for _, path in sorted(found)[:1]]


def old_pythons():
    """The oldest Python 3 found, plus the documented minimum 3.9 when it is a different one."""
    paths = oldest_python()
    paths += [p for p in sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9.*/bin/python3")))[:1]
              if p not in paths]
    return paths or [sys.executable]


@pytest.mark.parametrize("python", old_pythons())
def test_runs_on_a_bare_old_python(python, tmp_path):
    user = write(tmp_path / "settings.json", WORKING)
    bad = write(tmp_path / "bad.json", settings(ANTHROPIC_BASE_URL="http://127.0.0.1:8000/v1"))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    base = [python, "-I", str(DOCTOR), "--managed", str(tmp_path / "none.json"), "--offline", "--json"]
    good_run = subprocess.run(base + ["--settings", str(user)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert good_run.returncode == 0, good_run.stderr
    assert json.loads(good_run.stdout)["ok"] is True
    bad_run = subprocess.run(base + ["--settings", str(bad)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert bad_run.returncode == 1, bad_run.stderr
    assert [f["id"] for f in json.loads(bad_run.stdout)["findings"] if f["severity"] == "error"] == ["base_url.path"]
    usage = subprocess.run([python, "-I", str(DOCTOR), "--timeout", "-1"], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert usage.returncode == 2


def test_default_settings_path_is_home(tmp_path):
    """Without --settings the doctor reads ~/.claude/settings.json of the user running it."""
    (tmp_path / ".claude").mkdir()
    write(tmp_path / ".claude" / "settings.json", WORKING)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, str(DOCTOR), "--managed", str(tmp_path / "none"), "--offline",
                             "--json"], env=env, stdout=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert report["settings"][0]["path"] == str(tmp_path / ".claude" / "settings.json")


def project_dir(tmp_path, shared=None, local=None):
    """A repository whose .claude/ holds the given settings.json (shared) and settings.local.json (local)."""
    repo = tmp_path / "repo"
    (repo / ".claude").mkdir(parents=True)
    if shared is not None:
        write(repo / ".claude" / "settings.json", shared)
    if local is not None:
        write(repo / ".claude" / "settings.local.json", local)
    return repo


def test_project_settings_override_the_user_file(tmp_path, capsys):
    """CLI 2.1.331 measured: <dir>/.claude/settings.json and settings.local.json win over ~/.claude/settings.json."""
    repo = project_dir(tmp_path, shared={"env": {"ANTHROPIC_BASE_URL": "http://gpu-01:8000/v1"}},
                       local={"env": {"ANTHROPIC_AUTH_TOKEN": "other-token"}})
    code, report = run(tmp_path, WORKING, project=repo, capsys=capsys)
    assert code == 1
    assert [(s["kind"], s["status"]) for s in report["settings"]] == [
        ("user", "loaded"), ("project", "loaded"), ("local", "loaded"), ("managed", "missing")]
    finding = only_error(report, "base_url.path", "ANTHROPIC_BASE_URL")
    assert finding["source"] == str(repo / ".claude" / "settings.json") and finding["source_kind"] == "project"
    assert "fix or remove it there" in finding["fix"]
    overrides = {f["key"]: f for f in report["findings"] if f["id"] == "settings.project_override"}
    assert set(overrides) == {"ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN"}
    assert overrides["ANTHROPIC_AUTH_TOKEN"]["source_kind"] == "local"
    assert all(f["severity"] == "warning" for f in overrides.values())
    assert "other-token" not in json.dumps(report) and "dummy" not in json.dumps(report)


def test_project_file_equal_to_user_value_or_under_managed_is_quiet(tmp_path, capsys):
    repo = project_dir(tmp_path, shared={"model": "sonnet", "env": {"ANTHROPIC_BASE_URL": "http://gpu-01:8000"}})
    code, report = run(tmp_path, WORKING, {"env": {"ANTHROPIC_BASE_URL": "http://gpu-01:8000"}}, project=repo,
                       capsys=capsys)
    assert code == 0, errors(report)
    assert [f for f in report["findings"] if f["id"] == "settings.project_override"] == []
    assert report["effective"]["base_url"] == "http://gpu-01:8000"


def test_project_that_is_the_home_directory_reads_the_user_file_once(tmp_path, capsys):
    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True)
    user = write(home / ".claude" / "settings.json", WORKING)
    code = doctor.main(["--settings", str(user), "--managed", str(tmp_path / "none.json"), "--offline", "--json",
                        "--project", str(home)], environ={})
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [s["kind"] for s in report["settings"]] == ["user", "managed"]


def test_project_defaults_to_the_current_directory(tmp_path):
    repo = project_dir(tmp_path, shared={"model": SERVED})
    user = write(tmp_path / "settings.json", WORKING)
    argv = [sys.executable, str(DOCTOR), "--settings", str(user), "--managed", str(tmp_path / "none"), "--offline",
            "--json"]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    in_repo = subprocess.run(argv, cwd=str(repo), env=env, stdout=subprocess.PIPE, universal_newlines=True,
                             timeout=60)
    assert in_repo.returncode == 1
    assert [f["id"] for f in errors(json.loads(in_repo.stdout))] == ["model.alias"]
    without = subprocess.run(argv + ["--no-project"], cwd=str(repo), env=env, stdout=subprocess.PIPE,
                             universal_newlines=True, timeout=60)
    assert without.returncode == 0


def test_claude_config_dir_moves_the_user_file(tmp_path, capsys, monkeypatch):
    """CLI 2.1.331 measured: with CLAUDE_CONFIG_DIR set it reads $CLAUDE_CONFIG_DIR/settings.json, not ~/.claude."""
    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True)
    write(home / ".claude" / "settings.json", WORKING)
    other = tmp_path / "other-config"
    other.mkdir()
    monkeypatch.setenv("HOME", str(home))  # expanduser("~") for the fleet's file
    argv = ["--managed", str(tmp_path / "none.json"), "--offline", "--json", "--no-project"]
    code = doctor.main(argv, environ={"CLAUDE_CONFIG_DIR": str(other)})
    report = json.loads(capsys.readouterr().out)
    assert code == 1
    assert report["settings"][0]["path"] == str(other / "settings.json")
    missing = [f for f in errors(report) if f["id"] == "settings.missing"][0]
    assert missing["fix"].startswith("Unset CLAUDE_CONFIG_DIR")
    warning = [f for f in report["findings"] if f["id"] == "settings.config_dir"][0]
    assert warning["severity"] == "warning" and "Not logged in" in warning["symptom"]
    assert str(home / ".claude" / "settings.json") in warning["fix"]
    # pointing at the fleet's own directory is fine
    code = doctor.main(argv, environ={"CLAUDE_CONFIG_DIR": str(home / ".claude")})
    report = json.loads(capsys.readouterr().out)
    assert code == 0, errors(report)
    assert [f["severity"] for f in report["findings"] if f["id"] == "settings.config_dir"] == ["ok"]
    # an explicit --settings is read, but the warning still names the file the CLI reads
    code = doctor.main(argv + ["--settings", str(home / ".claude" / "settings.json")],
                       environ={"CLAUDE_CONFIG_DIR": str(other)})
    report = json.loads(capsys.readouterr().out)
    assert code == 0, errors(report)
    warning = [f for f in report["findings"] if f["id"] == "settings.config_dir"][0]
    assert warning["severity"] == "warning" and str(other / "settings.json") in warning["problem"]


# --------------------------------------------------------------------------------------------- hostile input
# A user can put anything where the doctor looks: it must answer every case with findings (file named, what is
# wrong, the fix), never hang, never print a traceback, never print a credential, and --json must stay strict JSON.

def reject_constant(name):
    raise ValueError("not strict JSON: " + name)


def strict_json(text):
    """json.loads that refuses NaN / Infinity (what a strict JSON parser, e.g. the smoke module's consumers, does)."""
    return json.loads(text, parse_constant=reject_constant)


def run_process(args, env, cwd=None, timeout=30):
    """The doctor in a subprocess, memory-capped: a hang or a runaway read fails the test instead of stalling it."""
    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))
    try:
        proc = subprocess.run([sys.executable, str(DOCTOR)] + args, env=env, cwd=cwd, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True, timeout=timeout,
                              preexec_fn=limit_memory)
    except subprocess.TimeoutExpired:
        pytest.fail("the doctor hung for more than {} s with {}".format(timeout, args))
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def bind_socket(path):
    """A Unix socket at path (bound from its directory: socket paths are limited to ~107 bytes)."""
    here = os.getcwd()
    os.chdir(str(path.parent))
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path.name)
        sock.close()
    finally:
        os.chdir(here)


# case -> words the problem must contain (what is wrong)
HOSTILE_FILES = {
    "fifo": "named pipe",
    "socket": "socket",
    "parent_is_file": "not a directory",
    "dangling_link": "symbolic link",
    "directory": "regular file",
    "invalid_utf8": "UTF-8",
    "deep_nesting": "nested",
    "sparse_1gib": "1073741824 bytes",
    "nan": "NaN",
}


def make_hostile(case, path):
    """Put the hostile thing at path (a settings file location); return the path the finding must name."""
    if case == "parent_is_file":
        path.parent.parent.mkdir(parents=True, exist_ok=True)
        path.parent.write_text("not a directory\n")
        return path.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    if case == "fifo":
        os.mkfifo(str(path))
    elif case == "socket":
        bind_socket(path)
    elif case == "dangling_link":
        os.symlink(str(path.parent / "gone.json"), str(path))
    elif case == "directory":
        path.mkdir()
    elif case == "invalid_utf8":
        path.write_bytes(b'{"model": "sonnet\xff\xfe", "env": {}}')
    elif case == "deep_nesting":
        path.write_text("[" * 200000)
    elif case == "sparse_1gib":
        with open(str(path), "wb") as handle:
            handle.truncate(1 << 30)
    elif case == "nan":
        path.write_text('{"model": "sonnet", "env": {"CLAUDE_CODE_MAX_OUTPUT_TOKENS": NaN}}')
    return path


@pytest.mark.parametrize("where", ["user", "config_dir", "project", "managed"])
@pytest.mark.parametrize("case", sorted(HOSTILE_FILES))
def test_hostile_settings_file(tmp_path, case, where):
    if where == "project" and case == "parent_is_file":
        pytest.skip("a project whose .claude is a file has no project settings: nothing to read, nothing to report")
    home = tmp_path / "home"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home)}
    args = ["--managed", str(tmp_path / "none.json"), "--offline", "--json", "--no-project"]
    if where == "user":
        target = home / ".claude" / "settings.json"
    elif where == "config_dir":
        target = tmp_path / "cfg" / "settings.json"
        env["CLAUDE_CONFIG_DIR"] = str(tmp_path / "cfg")
    elif where == "project":
        write_path = home / ".claude" / "settings.json"
        write_path.parent.mkdir(parents=True)
        write(write_path, WORKING)
        target = tmp_path / "repo" / ".claude" / "settings.json"
        args = ["--managed", str(tmp_path / "none.json"), "--offline", "--json", "--project", str(tmp_path / "repo")]
    else:
        (home / ".claude").mkdir(parents=True)
        write(home / ".claude" / "settings.json", WORKING)
        target = tmp_path / "etc" / "managed-settings.json"
        args = ["--managed", str(target), "--offline", "--json", "--no-project"]
    named = make_hostile(case, target)
    proc = run_process(args, env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = strict_json(proc.stdout)
    about = [f for f in report["findings"] if f["id"].startswith("settings.") and f["severity"] == "error"]
    assert len(about) == 1, json.dumps(report["findings"], indent=1)
    finding = about[0]
    assert str(named) in finding["problem"], finding
    assert HOSTILE_FILES[case] in finding["problem"], finding
    assert finding["symptom"] and finding["fix"], finding
    assert "Errno" not in proc.stdout and "maximum recursion" not in proc.stdout
    kind = {"user": "user", "config_dir": "user", "project": "project", "managed": "managed"}[where]
    assert [s["status"] for s in report["settings"] if s["kind"] == kind] != ["loaded"]


def test_fifo_swapped_in_after_the_check_is_refused_without_blocking(tmp_path, capsys, monkeypatch):
    """The race: stat() saw a regular file, a FIFO is there by the time it is opened. The non-blocking open
    returns at once and fstat() on that descriptor refuses it (signal.alarm: a regression fails, not hangs)."""
    fifo = tmp_path / "settings.json"
    os.mkfifo(str(fifo))
    regular = write(tmp_path / "regular.json", WORKING)
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda path, *a, **k: real_stat(str(regular) if str(path) == str(fifo) else path,
                                                                      *a, **k))

    def hung(*_args):
        raise TimeoutError("the doctor blocked on a FIFO")
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        code, report = run(tmp_path, None, capsys=capsys)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert code == 1
    finding = [f for f in errors(report) if f["id"] == "settings.unreadable"][0]
    assert str(fifo) in finding["problem"] and "named pipe" in finding["problem"] and finding["fix"]


def test_settings_size_cap_option(tmp_path, capsys):
    data = settings()
    data["padding"] = "x" * 3000
    path = write(tmp_path / "settings.json", data)
    base = ["--settings", str(path), "--managed", str(tmp_path / "none.json"), "--offline", "--json", "--no-project"]
    assert doctor.main(base + ["--max-settings-bytes", "1000"], environ={}) == 1
    report = strict_json(capsys.readouterr().out)
    finding = [f for f in errors(report) if f["id"] == "settings.too_large"][0]
    assert str(path) in finding["problem"] and "1000-byte" in finding["problem"]
    assert "--max-settings-bytes" in finding["fix"]
    assert doctor.main(base + ["--max-settings-bytes", "65536"], environ={}) == 0
    assert errors(strict_json(capsys.readouterr().out)) == []
    assert doctor.DEFAULT_MAX_SETTINGS_BYTES == 1048576


@pytest.mark.parametrize("python", old_pythons())
def test_hostile_files_on_an_old_python(python, tmp_path):
    for case in ("fifo", "deep_nesting", "nan", "parent_is_file"):
        home = tmp_path / case
        named = make_hostile(case, home / ".claude" / "settings.json")
        proc = run_process(["--managed", str(tmp_path / "none.json"), "--offline", "--json", "--no-project"],
                           {"PATH": "/usr/bin:/bin", "HOME": str(home)})
        assert proc.returncode == 1, proc.stderr
        problems = [f["problem"] for f in strict_json(proc.stdout)["findings"] if f["id"].startswith("settings.")]
        assert any(str(named) in p and HOSTILE_FILES[case] in p for p in problems), problems


def test_unreadable_file_names_it_and_the_fix(tmp_path, capsys, monkeypatch):
    target = write(tmp_path / "settings.json", WORKING)
    if os.geteuid() == 0:  # root reads any mode: refuse the open the way the kernel would for a user
        real_open = os.open

        def denied(path, *args, **kwargs):
            if str(path) == str(target):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_open(path, *args, **kwargs)
        real_builtin_open = builtins.open

        def denied_builtin(path, *args, **kwargs):
            if str(path) == str(target):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_builtin_open(path, *args, **kwargs)
        monkeypatch.setattr(os, "open", denied)
        monkeypatch.setattr(builtins, "open", denied_builtin)
    else:
        target.chmod(0)
    code, report = run(tmp_path, None, capsys=capsys)
    assert code == 1
    finding = [f for f in errors(report) if f["id"] == "settings.unreadable"][0]
    assert str(target) in finding["problem"] and "ermission denied" in finding["problem"]
    assert "readable" in finding["fix"] and "Errno" not in json.dumps(report)


@pytest.mark.parametrize("url", [
    "http://u:SECRET-pass-1@x:99999",
    "http://u:SECRET-pass-1@[::1:8000",
    "http://u:SECRET-pass-1@",
    "http://u:SECRET-pass-1@:8000",
    "http://u:SECRET-pass-1@gpu-01:0",
    "http://u:SECRET-pass-1@gpu 01:8000",
    " http://u:SECRET-pass-1@gpu-01:8000",
    "ftp://u:SECRET-pass-1@gpu-01:8000",
    "u:SECRET-pass-1@gpu-01:8000",
    "http://u:SECRET-pass-1@gpu-01:8000/v1",
    "http://u:SECRET-pass-1@exa\uff0fmple:8000",
    "http://u:SECRET/pass-1@gpu-01:8000",
    "http://SECRET-pass-1@gpu-01:8000",
])
def test_url_credentials_are_never_printed(tmp_path, capsys, url):
    path = write(tmp_path / "settings.json", settings(ANTHROPIC_BASE_URL=url))
    for extra in (["--json"], []):
        code = doctor.main(["--settings", str(path), "--managed", str(tmp_path / "none"), "--offline",
                            "--no-project"] + extra, environ={})
        captured = capsys.readouterr()
        assert code in (0, 1)  # credentials alone are a warning (base_url.credentials)
        for secret in ("SECRET-pass-1", "SECRET/pass-1", "pass-1"):
            assert secret not in captured.out + captured.err, captured.out
        if extra:
            report = strict_json(captured.out)
            assert any(f["key"] == "ANTHROPIC_BASE_URL" and f["severity"] in ("error", "warning")
                       for f in report["findings"])


def test_secret_looking_env_values_are_masked(tmp_path, capsys):
    data = settings(GITHUB_TOKEN=12345678901234, DB_PASSWORD=["hunter2-secret"], MY_SECRET={"x": "abcdef-secret"},
                    AWS_ACCESS_KEY_ID="AKIA-secret-id")
    repo = project_dir(tmp_path, shared={"env": {"GITHUB_TOKEN": "ghp_projectsecret", "ANTHROPIC_AUTH_TOKEN": 987654}})
    code, report = run(tmp_path, data, project=repo, capsys=capsys)
    text = json.dumps(report)
    for secret in ("12345678901234", "hunter2-secret", "abcdef-secret", "AKIA-secret-id", "ghp_projectsecret",
                   "987654"):
        assert secret not in text, secret
    assert report["effective"]["max_output_tokens"] == 32000  # a token *count* is not a secret


def test_json_output_is_strict_with_non_finite_numbers(tmp_path, capsys):
    data = settings(CLAUDE_CODE_MAX_OUTPUT_TOKENS=1)
    data["model"] = "MODEL"
    data["env"]["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] = "BUDGET"
    text = json.dumps(data).replace('"MODEL"', "1e999").replace('"BUDGET"', "-1e999")  # valid JSON: +-inf
    path = write(tmp_path / "settings.json", text)
    for extra in (["--json"], []):
        code = doctor.main(["--settings", str(path), "--managed", str(tmp_path / "none"), "--offline",
                            "--no-project"] + extra, environ={})
        out = capsys.readouterr().out
        assert code == 1
    code = doctor.main(["--settings", str(path), "--managed", str(tmp_path / "none"), "--offline", "--no-project",
                        "--json"], environ={})
    report = strict_json(capsys.readouterr().out)
    assert report["effective"]["model"] is not None
    assert "output_budget.invalid" in {f["id"] for f in errors(report)}


# ----------------------------------------------------------------------------- fuzz: settings and offline checks

SECRET_ENV_KEYS = ("ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_API_KEY", "GITHUB_TOKEN", "DB_PASSWORD", "MY_SECRET",
                   "OPENAI_API_KEY")
KNOWN_KEYS = ("ANTHROPIC_BASE_URL", "ANTHROPIC_DEFAULT_OPUS_MODEL", "ANTHROPIC_DEFAULT_SONNET_MODEL",
              "ANTHROPIC_DEFAULT_HAIKU_MODEL", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
              "CLAUDE_CODE_MAX_OUTPUT_TOKENS", "ANTHROPIC_CUSTOM_MODEL_OPTION", "ANTHROPIC_MODEL",
              "ANTHROPIC_SMALL_FAST_MODEL", "API_TIMEOUT_MS", "HTTPS_PROXY")


class Planted(object):
    """Secrets planted in one fuzz case: none of them may appear in the doctor's output."""

    def __init__(self, rng):
        self.rng = rng
        self.values = []

    def new(self, prefix):
        value = "{}-{:016x}".format(prefix, self.rng.getrandbits(64))
        self.values.append(value)
        return value

    def check(self, text):
        for value in self.values:
            assert value not in text, "planted secret {!r} printed:\n{}".format(value, text[:3000])


def random_url(rng, planted, host=None, port=None):
    scheme = rng.choice(["http", "https", "HTTP", "ftp", "", "http:", "h\u00fcttp"])
    password = planted.new("pw")
    userinfo = rng.choice(["", "", "user:{}@".format(password), "{}@".format(password), ":{}@".format(password),
                           "us er:{}@".format(password), "user:{}/x@".format(password),
                           "user:{}@evil@".format(password)])
    host = host or rng.choice(["gpu-01", "127.0.0.1", "[::1]", "[::1", "::1]", "[fe80::1%eth0]", "", " ", "gp u",
                               "gp\u00fc", "exa\uff0fmple", "\u2100", "a" * 300, "x.invalid", "[v1.x]", "h\x00st"])
    port = port if port is not None else rng.choice(["", ":", ":0", ":8000", ":65535", ":65536", ":99999", ":-1",
                                                     ":+80", ": 80", ":abc", ":8000:9000", ":\u0668\u0660"])
    path = rng.choice(["", "", "/", "/v1", "/v1/", "/api?x=1", "#frag", "?q=@at", "/a b", "/\n"])
    sep = rng.choice(["://", "://", "//", ":/", ""])
    if "//" not in sep and ":" not in userinfo:
        planted.values.remove(password)  # "httpsSECRET@host" has no credentials: nothing marks it as secret
    return scheme + sep + userinfo + host + port + path


def random_value(rng, planted, depth=0):
    choice = rng.randrange(14 if depth < 6 else 9)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False])
    if choice == 2:
        return rng.choice([0, 1, -1, 16000, 32000, 10 ** 30, -(10 ** 30), 2 ** 63])
    if choice == 3:
        return rng.choice([0.5, -0.0, 1e308, 16000.0, float("inf"), float("nan"), "__BIG__"])
    if choice in (4, 5):
        return rng.choice(["", " ", "sonnet", "SONNET", "opus", SERVED, "Qwen/" + SERVED, " x ", "a b", "\n", "1",
                           "0", "16000", "abc", "\u00fc\u00f1\u00ee", "\ud800", "\x00\x1b[31m", "x" * 5000, "9" * 5000,
                           "1e5", "1_000", "-5"])
    if choice == 6:
        return random_url(rng, planted)
    if choice == 7:  # looks like a token, but where nothing says it is one (only secret-looking keys do)
        return "tok-not-a-secret-{}".format(rng.randrange(100))
    if choice == 8:
        return "http://127.0.0.1:8000"
    if choice in (9, 10):
        return [random_value(rng, planted, depth + 1) for _ in range(rng.randrange(4))]
    keys = list(KNOWN_KEYS) + list(SECRET_ENV_KEYS) + ["", "a", "env", "model", "x y"]
    data = {}
    for _ in range(rng.randrange(4)):
        key = rng.choice(keys)
        data[key] = planted_secret(rng, planted) if key in SECRET_ENV_KEYS else random_value(rng, planted, depth + 1)
    return data


def planted_secret(rng, planted):
    """A value under a secret-looking key: a token, or one hidden in a list or an object."""
    kind = rng.randrange(4)
    if kind == 3:  # a number: still a secret
        number = 10 ** 15 + rng.randrange(10 ** 15)
        planted.values.append(str(number))
        return number
    token = planted.new("tok")
    return [token, [token, 1], {"a": {"b": token}}][kind]


def random_settings(rng, planted):
    """A settings file as text: random types everywhere, secrets planted under secret-looking keys and in URLs."""
    data = {}
    if rng.random() < 0.8:
        data["model"] = random_value(rng, planted) if rng.random() < 0.5 else rng.choice(["sonnet", SERVED])
    if rng.random() < 0.15:
        data["env"] = random_value(rng, planted)
    else:
        env = {}
        for key in KNOWN_KEYS:
            if rng.random() < 0.5:
                env[key] = random_value(rng, planted) if rng.random() < 0.6 else WORKING["env"].get(key, SERVED)
        for key in SECRET_ENV_KEYS:
            if rng.random() < 0.5:
                env[key] = planted_secret(rng, planted)
        if rng.random() < 0.5:
            env["ANTHROPIC_BASE_URL"] = random_url(rng, planted)
        data["env"] = env
    if rng.random() < 0.3:
        data["mcpServers"] = {"gh": {"env": {"GITHUB_TOKEN": planted.new("tok")}, "url": random_url(rng, planted)}}
    if rng.random() < 0.2:
        data[rng.choice(["permissions", "hooks", "x", "apiKeyHelper"])] = random_value(rng, planted)
    text = json.dumps(data, indent=rng.choice([None, 2]))
    return text.replace('"__BIG__"', rng.choice(["1e999", "-1e999", "1" * 400, "0.0000e-99999"]))


def mutate(rng, data):
    """Byte-level mutations of a settings file: flips, cuts, insertions of JSON tokens, deep nesting, NaN."""
    data = bytearray(data)
    for _ in range(rng.randrange(1, 6)):
        op = rng.randrange(7)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif op == 1:
            del data[pos:pos + rng.randrange(1, 20)]
        elif op == 2:
            data[pos:pos] = rng.choice([b"NaN", b"-Infinity", b"Infinity", b"1e999", b"\xff", b"\xc3", b"\x00",
                                        b'"\\ud800"', b"\xef\xbb\xbf", b",", b"}", b"]", b'"', b"\\"])
        elif op == 3:
            depth = rng.choice([50, 101, 999, 1000, 3000, 100000])
            data[pos:pos] = rng.choice([b"[", b'{"a":']) * depth
        elif op == 4:
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        elif op == 5:
            data = data[:pos]
        else:
            data[pos:pos] = b'{"env": {"ANTHROPIC_BASE_URL": "http://u:p@x:99999"}}'
    return bytes(data)


def run_main(argv, environ, capsys):
    """main() in this process: it must return 0 or 1 and leave no exception, whatever the input."""
    code = doctor.main(argv, environ=environ)
    captured = capsys.readouterr()
    assert code in (0, 1), captured
    return captured.out, captured.err


def check_json_output(out):
    report = strict_json(out)
    assert report["schema"] == "claude-vllm-doctor/1"
    assert "doctor.internal_error" not in {f["id"] for f in report["findings"]}, report["findings"]
    return report


# The fuzz case counts: run against the doctor before it was hardened (04de8ff^), these seeds hit every kind of
# failure that 1000/800/1000 cases hit, with room to spare: settings bytes by case 83 of 300 (port out of range,
# JSON nesting), structures by case 261 of 400 (NaN/Infinity, printed secrets, unparsable ports), URLs by case
# 298 of 500 (every unparsable port form, printed credentials). A new seed or generator must be checked again.
def test_fuzz_settings_bytes(tmp_path, capsys):
    """Random bytes and mutated settings files, in the user, project and managed positions."""
    rng = random.Random(20261124)
    repo = project_dir(tmp_path)
    seeds = [json.dumps(WORKING).encode(), json.dumps(WORKING, indent=2).encode(), b"{}", b"[]", b""]
    for _ in range(300):
        if rng.random() < 0.3:
            blob = bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
        else:
            blob = mutate(rng, rng.choice(seeds))
        target = rng.choice([tmp_path / "settings.json", tmp_path / "managed-settings.json",
                             repo / ".claude" / "settings.json", repo / ".claude" / "settings.local.json"])
        target.write_bytes(blob)
        argv = ["--settings", str(tmp_path / "settings.json"), "--managed", str(tmp_path / "managed-settings.json"),
                "--offline", "--project", str(repo)]
        out, _ = run_main(argv + ["--json"], {}, capsys)
        check_json_output(out)
        run_main(argv, {}, capsys)
        target.unlink()


def test_fuzz_settings_structures(tmp_path, capsys):
    """Random JSON of random types in every position, random URLs, planted secrets: none is ever printed."""
    rng = random.Random(11)
    repo = project_dir(tmp_path)
    for _ in range(400):
        planted = Planted(rng)
        files = {tmp_path / "settings.json": random_settings(rng, planted)}
        for extra in (tmp_path / "managed-settings.json", repo / ".claude" / "settings.json",
                      repo / ".claude" / "settings.local.json"):
            if rng.random() < 0.3:
                files[extra] = random_settings(rng, planted)
        for path, text in files.items():
            path.write_text(text)
        environ = {}
        if rng.random() < 0.3:
            environ = {"ANTHROPIC_AUTH_TOKEN": planted.new("tok"), "ANTHROPIC_BASE_URL": random_url(rng, planted),
                       "GITHUB_TOKEN": planted.new("tok"), "HTTPS_PROXY": random_url(rng, planted)}
        argv = ["--settings", str(tmp_path / "settings.json"), "--managed", str(tmp_path / "managed-settings.json"),
                "--offline", "--project", str(repo)]
        out, err = run_main(argv + ["--json"], environ, capsys)
        check_json_output(out)
        planted.check(out + err)
        out, err = run_main(argv, environ, capsys)
        planted.check(out + err)
        for path in files:
            path.unlink()


def test_fuzz_deep_nesting(tmp_path, capsys):
    for depth in (99, 100, 101, 500, 998, 1000, 5000, 200000):
        for opener, closer in (("[", "]"), ('{"a":', "}")):
            nested = opener * depth + "1" + closer * depth
            for text in (nested, '{"env": {"ANTHROPIC_BASE_URL": ' + nested + "}}", '{"model": ' + nested + "}",
                         '{"env": ' + nested + "}", opener * depth):
                write(tmp_path / "settings.json", text)
                out, _ = run_main(["--settings", str(tmp_path / "settings.json"), "--managed",
                                   str(tmp_path / "none"), "--offline", "--no-project", "--json"], {}, capsys)
                check_json_output(out)


def test_fuzz_urls(tmp_path, capsys):
    rng = random.Random(7)
    for _ in range(500):
        planted = Planted(rng)
        path = write(tmp_path / "settings.json", settings(ANTHROPIC_BASE_URL=random_url(rng, planted),
                                                          ANTHROPIC_AUTH_TOKEN=planted.new("tok")))
        out, err = run_main(["--settings", str(path), "--managed", str(tmp_path / "none"), "--offline",
                             "--no-project", "--json"], {}, capsys)
        report = check_json_output(out)
        planted.check(out + err)
        assert report["effective"]["auth_token"] == "********"


# ----------------------------------------------------------------------------- fuzz: hostile server answers

BIG_BODY = b'{"data": [' + b'{"id": "x", "max_model_len": 1},' * 70000 + b'{"id": "Qwen3.5-27B"}]}'


def good_models():
    return 200, "application/json", json.dumps({"object": "list", "data": [
        {"id": SERVED, "object": "model", "max_model_len": 65536}]}).encode()


def good_message():
    return 200, "application/json", json.dumps({"type": "message", "content": [
        {"type": "text", "text": "ready"}]}).encode()


HOSTILE_ANSWERS = [
    (200, "application/json", b'{"content": 5}'),
    (200, "application/json", b'{"content": "text"}'),
    (200, "application/json", b'{"content": [5, null, {"type": "text", "text": 5}, {"type": "tool_use", "name": []}]}'),
    (200, "application/json", b'{"content": [{"type": "text", "text": {"a": 1}}]}'),
    (200, "application/json", b"[1, 2, 3]"),
    (200, "application/json", b'"just a string"'),
    (200, "application/json", b"null"),
    (200, "application/json", b'{"data": 5}'),
    (200, "application/json", b'{"data": {"id": "Qwen3.5-27B"}}'),
    (200, "application/json", b'{"data": [5, "x", null, {"id": null}, {"id": {"a": [1]}}, {"id": 7}]}'),
    (200, "application/json", b'{"data": [{"id": "Qwen3.5-27B", "max_model_len": "65536"}]}'),
    (200, "application/json", b'{"data": [{"id": "Qwen3.5-27B", "max_model_len": NaN}]}'),
    (200, "application/json", b'{"data": [{"id": "Qwen3.5-27B", "max_model_len": 1e999}]}'),
    (200, "application/json", b'{"data": [{"id": "Qwen3.5-27B", "max_model_len": true}]}'),
    (200, "application/json", b'{"data": [{"id": "Qwen3.5-27B", "max_model_len": -5}]}'),
    (200, "application/json", b'{"data": [{"id": "Qwen3.5-27B", "max_model_len": ' + b"9" * 5000 + b"}]}"),
    (200, "application/json", b'{"data": [{"id": "Qwen3.5-27B", "max_model_len": 99999999999999999999999}]}'),
    (200, "application/json", b'{"data": [{"id": "Qwen/Qwen3.5-27B\\u001b[31m"}]}'),
    (200, "text/html", b"<html><body>It works!</body></html>"),
    (200, "application/json", b"[" * 70000),
    (200, "application/json", b'{"error": {"message": ' + b"[" * 5000 + b"]" * 5000 + b"}}"),
    (200, "application/json", BIG_BODY),
    (200, "application/octet-stream", bytes(range(256)) * 10),
    (200, "application/json", b""),
    (400, "application/json", b'{"error": {"message": {"nested": ["auto", "tool"]}}}'),
    (400, "text/plain", b'"auto" tool choice requires --enable-auto-tool-choice \xff\xfe'),
    (400, "application/json", b'{"error": {"message": "max_model_len NaN"}, "detail": [1]}'),
    (401, "application/json", b'{"error": "Unauthorized"}'),
    (403, "text/plain", b"\x00\x01\x02 forbidden"),
    (404, "application/json", b'{"message": 5, "detail": {"a": "does not exist"}}'),
    (404, "text/plain", b"The model `X` does not exist." + b"\xff" * 100),
    (500, "application/json", b"NaN"),
    (503, "text/html", b"<h1>" + b"A" * 200000 + b"</h1>"),
    (302, "text/plain", b"go elsewhere"),
    (204, "application/json", b""),
    "echo",            # the request's own headers in the body: the token must still not be printed
    "bad_status_line",
    "short_body",      # Content-Length larger than what is sent
    "close",           # closes the connection without an answer
]


class HostileServer(BaseHTTPRequestHandler):
    """A real HTTP server answering each path with what the test sets in `answers` (default: a good vLLM)."""

    answers = {}
    seen = []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self._serve()

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self._serve()

    def _serve(self):
        HostileServer.seen.append(self.requestline + "\n" + str(self.headers))
        default = {"/health": (200, "text/plain", b""), "/v1/models": good_models()}.get(self.path, good_message())
        answer = self.answers.get(self.path, default)
        if answer == "echo":
            answer = (401, "text/plain", ("you sent: " + str(self.headers)).encode())
        if answer == "bad_status_line":
            self.wfile.write(b"HELLO THERE\r\n\r\n")
            return
        if answer == "close":
            self.close_connection = True
            return
        if answer == "short_body":
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b'{"content": [')
            return
        status, content_type, body = answer
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if status == 302:
            self.send_header("Location", "http://127.0.0.1:1/elsewhere")
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:  # the doctor stops reading at its cap and closes
            pass

    def log_message(self, *_args):
        pass


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that hangs up early is expected here


@pytest.fixture()
def hostile_server():
    httpd = QuietServer(("127.0.0.1", 0), HostileServer)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)  # quick shutdown
    thread.start()
    yield "http://127.0.0.1:{}".format(httpd.server_address[1])
    httpd.shutdown()
    httpd.server_close()
    HostileServer.answers, HostileServer.seen = {}, []


def test_fuzz_hostile_server_answers(tmp_path, capsys, hostile_server):
    rng = random.Random(5)
    paths = ["/health", "/v1/models", "/v1/messages", "/v1/v1/messages"]
    cases = [dict((path, answer) for path in paths) for answer in HOSTILE_ANSWERS]  # each answer everywhere
    for path in paths:  # each answer at each endpoint, the others good
        cases += [{path: answer} for answer in HOSTILE_ANSWERS]
    cases += [dict((p, rng.choice(HOSTILE_ANSWERS)) for p in paths if rng.random() < 0.7) for _ in range(60)]
    for number, answers in enumerate(cases):
        planted = Planted(rng)
        HostileServer.answers = answers
        url = rng.choice([hostile_server, hostile_server + "/v1", hostile_server + "/"])
        if rng.random() < 0.3:
            url = url.replace("http://", "http://user:{}@".format(planted.new("pw")))
        env_changes = {"ANTHROPIC_BASE_URL": url, "ANTHROPIC_AUTH_TOKEN": planted.new("tok")}
        if rng.random() < 0.3:
            env_changes["ANTHROPIC_API_KEY"] = planted.new("key")
        path = write(tmp_path / "settings.json", settings(**env_changes))
        argv = ["--settings", str(path), "--managed", str(tmp_path / "none"), "--no-project", "--timeout", "5"]
        out, err = run_main(argv + ["--json"], {}, capsys)
        report = check_json_output(out)
        assert report["server"]["checked"] is True, (number, answers)
        planted.check(out + err)
        out, err = run_main(argv, {}, capsys)
        planted.check(out + err)
    for request in HostileServer.seen:  # URL credentials are never sent either
        assert "pw-" not in request


def test_server_answer_content_5_is_a_finding(tmp_path, capsys, hostile_server):
    """The issue's case: a server answering {"content": 5} to POST /v1/messages."""
    HostileServer.answers = {"/v1/messages": (200, "application/json", b'{"content": 5}')}
    path = write(tmp_path / "settings.json", settings(ANTHROPIC_BASE_URL=hostile_server))
    out, _ = run_main(["--settings", str(path), "--managed", str(tmp_path / "none"), "--no-project", "--json"], {},
                      capsys)
    report = check_json_output(out)
    finding = [f for f in report["findings"] if f["id"] == "server.messages"][0]
    assert finding["severity"] == "warning" and "no text" in finding["problem"]


# ------------------------------------------------------------------ the tool-call check (server.tool_call)
# A real local HTTP server answering POST /v1/messages as vLLM 0.32 does: the plain request with text, the
# request with tools with what the test sets (the shapes of vLLM's answers with the right parser, a wrong
# one, none). The real vLLM with the scripted tool-call model is the e2e scenario's (molecule/e2e/tool_calls.yml).

class ToolServer(BaseHTTPRequestHandler):
    tool_answer = None  # (status, body dict) for the request with tools
    bodies = []

    def do_GET(self):  # noqa: N802
        answer = {"/health": (200, {}), "/v1/models": (200, json.loads(good_models()[2]))}.get(self.path, (404, {}))
        self._send(*answer)

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        ToolServer.bodies.append(body)
        if "tools" in body:
            self._send(*self.tool_answer)
        else:
            self._send(200, json.loads(good_message()[2]))

    def _send(self, status, data):
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *_args):
        pass


def vllm_message(content, stop_reason="end_turn"):
    return 200, {"id": "msg_1", "type": "message", "role": "assistant", "model": SERVED, "content": content,
                 "stop_reason": stop_reason, "usage": {"input_tokens": 180, "output_tokens": 3}}


HERMES_TEXT = '<tool_call>\n{"name": "Bash", "arguments": {"command": "echo hi"}}\n</tool_call>'


def diagnose_against(server_class, tmp_path, capsys, **env):
    """The doctor's JSON report (and exit code) for settings whose base URL is a live `server_class` stand-in."""
    httpd = serve(server_class)
    try:
        url = "http://127.0.0.1:{}".format(httpd.server_address[1])
        path = write(tmp_path / "settings.json", settings(ANTHROPIC_BASE_URL=url, **env))
        code = doctor.main(["--settings", str(path), "--managed", str(tmp_path / "none"), "--no-project", "--json"],
                           environ={})
        return code, json.loads(capsys.readouterr().out)
    finally:
        httpd.shutdown()
        httpd.server_close()


def diagnose_tools(tmp_path, capsys, answer):
    ToolServer.tool_answer, ToolServer.bodies = answer, []
    code, report = diagnose_against(ToolServer, tmp_path, capsys)
    found = [f for f in report["findings"] if f["id"] == "server.tool_call"]
    return code, report, found[0] if found else None


def test_tool_call_request_lets_the_parser_work(tmp_path, capsys):
    """tool_choice auto (vLLM serves "tool" and "any" with guided JSON, never running the parser), one tool, a
    prompt asking for it, room for the call."""
    diagnose_tools(tmp_path, capsys, vllm_message([{"type": "text", "text": "ready"}]))
    tools_body = [b for b in ToolServer.bodies if "tools" in b][0]
    assert tools_body["tool_choice"] == {"type": "auto"}
    assert [t["name"] for t in tools_body["tools"]] == [doctor.TOOL_NAME]
    assert doctor.TOOL_NAME in tools_body["messages"][0]["content"] and tools_body["max_tokens"] >= 128


def test_tool_use_block_with_parsed_input_passes(tmp_path, capsys):
    code, report, finding = diagnose_tools(tmp_path, capsys, vllm_message(
        [{"type": "tool_use", "id": "toolu_1", "name": "show_word", "input": {"word": "ready"}}], "tool_use"))
    assert code == 0 and report["ok"]
    assert finding["severity"] == "ok" and "show_word" in finding["problem"] and '"word": "ready"' in finding["problem"]
    assert "tools" in report["server"]["timings_ms"]


def test_a_call_of_another_tool_still_proves_the_parser(tmp_path, capsys):
    code, _report, finding = diagnose_tools(tmp_path, capsys, vllm_message(
        [{"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "echo hi"}}], "tool_use"))
    assert code == 0 and finding["severity"] == "ok" and "the parser works" in finding["problem"]


@pytest.mark.parametrize("text, parser", [
    (HERMES_TEXT, "hermes"),                                                  # a parser that keeps the tags
    ('\n{"name": "Bash", "arguments": {"command": "echo hi"}}\n', "hermes"),  # one that drops them (pythonic)
    ("<tool_call>\n<function=show_word>\n<parameter=word>\nready\n</parameter>\n</function>\n</tool_call>",
     "qwen3_coder"),
    ('[TOOL_CALLS][{"name": "show_word", "arguments": {"word": "ready"}}]', "mistral"),
    ('<|python_tag|>{"name": "show_word", "parameters": {"word": "ready"}}', "llama3_json"),
])
def test_an_unparsed_tool_call_fails_naming_the_parser_and_the_fix(tmp_path, capsys, text, parser):
    code, report, finding = diagnose_tools(tmp_path, capsys, vllm_message([{"type": "text", "text": text}]))
    assert code == 1 and not report["ok"]
    assert [f["id"] for f in errors(report)] == ["server.tool_call"]
    assert finding["key"] == "vllm --tool-call-parser"
    assert "--tool-call-parser does not match the model" in finding["problem"]
    assert "--tool-call-parser {}".format(parser) in finding["problem"]
    assert "vllm_tool_call_parser: {}".format(parser) in finding["fix"] and "--tags vllm" in finding["fix"]
    assert "silently stops using tools" in finding["symptom"]
    # the plain request and the tools request themselves answered 200
    assert {f["id"]: f["severity"] for f in report["findings"] if f["id"] in ("server.messages", "server.tools")} \
        == {"server.messages": "ok", "server.tools": "ok"}


def test_an_answer_without_a_call_is_only_a_warning(tmp_path, capsys):
    """A real model may answer in words: not proven, not failed."""
    code, report, finding = diagnose_tools(tmp_path, capsys, vllm_message(
        [{"type": "text", "text": "Hello from the tiny scripted model."}]))
    assert code == 0 and report["ok"] and finding["severity"] == "warning"
    assert "without calling the tool" in finding["problem"] and "vllm_tool_call_parser" in finding["fix"]


def test_a_call_cut_at_max_tokens_is_a_warning(tmp_path, capsys):
    code, _report, finding = diagnose_tools(tmp_path, capsys, vllm_message(
        [{"type": "text", "text": '<tool_call>\n{"name": "show_word", "argu'}], "max_tokens"))
    assert code == 0 and finding["severity"] == "warning" and "cut at max_tokens" in finding["problem"]


def test_a_tool_use_block_without_an_object_input_fails(tmp_path, capsys):
    code, _report, finding = diagnose_tools(tmp_path, capsys, vllm_message(
        [{"type": "tool_use", "id": "toolu_1", "name": "show_word", "input": "word=ready"}], "tool_use"))
    assert code == 1 and finding["severity"] == "error" and "vllm_tool_call_parser" in finding["fix"]


def test_without_tool_calling_the_400_is_reported_and_no_tool_call_finding(tmp_path, capsys):
    code, report, finding = diagnose_tools(tmp_path, capsys, (400, {"type": "error", "error": {
        "type": "BadRequestError", "message": "\"auto\" tool choice requires --enable-auto-tool-choice and "
                                              "--tool-call-parser to be set"}}))
    assert code == 1 and finding is None
    assert [f["id"] for f in errors(report)] == ["server.tools"]


# ------------------------------------------------------------------ tiers on their own models, online
# A real local HTTP server answering as vLLM 0.32 does for the names it serves (`served`), and 404 "does not
# exist" for any other; `listed` is what GET /v1/models lists (a gateway routing by "model" lists one backend's).
SMALL = "Qwen3-4B"


class TierServer(BaseHTTPRequestHandler):
    served = (SERVED, SMALL)
    listed = (SERVED, SMALL)
    asked = []

    def do_GET(self):  # noqa: N802
        if self.path == "/health":
            self._send(200, {})
        elif self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": name, "object": "model", "max_model_len": 65536}
                                                        for name in self.listed]})
        else:
            self._send(404, {})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        TierServer.asked.append((body["model"], "tools" in body))
        if body["model"] not in self.served:
            self._send(404, {"type": "error", "error": {"type": "NotFoundError",
                                                        "message": "The model `{}` does not exist.".format(body["model"])}})
        elif "tools" in body:
            self._send(*vllm_message([{"type": "tool_use", "id": "toolu_1", "name": "show_word",
                                       "input": {"word": "ready"}}], "tool_use"))
        else:
            self._send(*vllm_message([{"type": "text", "text": "ready"}]))

    _send = ToolServer._send

    def log_message(self, *_args):
        pass


def diagnose_tiers(tmp_path, capsys, served=(SERVED, SMALL), listed=(SERVED, SMALL), **tiers):
    TierServer.served, TierServer.listed, TierServer.asked = served, listed, []
    return diagnose_against(TierServer, tmp_path, capsys, **{"ANTHROPIC_DEFAULT_{}_MODEL".format(tier.upper()): name
                                                             for tier, name in tiers.items()})


def test_each_tiers_name_is_checked_on_the_server(tmp_path, capsys):
    code, report = diagnose_tiers(tmp_path, capsys, haiku=SMALL)
    assert code == 0 and report["ok"], json.dumps(errors(report), indent=1)
    # the selected tier's name, then the haiku tier's: plain request and tool call each
    assert TierServer.asked == [(SERVED, False), (SERVED, True), (SMALL, False), (SMALL, True)]
    haiku = [f for f in report["findings"] if f["problem"].startswith("The haiku tier's 'Qwen3-4B': ")]
    assert {f["id"]: f["severity"] for f in haiku} == {"server.models": "ok", "output_budget.server": "ok",
                                                       "server.messages": "ok", "server.tools": "ok",
                                                       "server.tool_call": "ok"}
    assert {"messages", "tools", "messages.haiku", "tools.haiku"} <= set(report["server"]["timings_ms"])
    assert report["effective"]["served_model_name"] == SERVED


def test_a_tiers_name_the_server_does_not_serve_fails_naming_the_tier_and_the_fix(tmp_path, capsys):
    code, report = diagnose_tiers(tmp_path, capsys, served=(SERVED,), listed=(SERVED,), haiku=SMALL)
    assert code == 1 and not report["ok"]
    (finding,) = errors(report)
    assert finding["id"] == "server.models"
    assert finding["problem"].startswith("The haiku tier's 'Qwen3-4B': The server does not serve 'Qwen3-4B'")
    assert "does not exist" in finding["problem"]  # the 404 of POST /v1/messages as evidence
    assert "ANTHROPIC_DEFAULT_HAIKU_MODEL" in finding["fix"] and "served_model_tiers.haiku" in finding["fix"]
    assert "served_model_name: Qwen3-4B" in finding["fix"]
    # the sonnet tier (selected) passed, and its findings carry no tier label
    sonnet = {f["id"]: f["severity"] for f in report["findings"]
              if f["id"].startswith("server.") and not f["problem"].startswith("The haiku")}
    assert sonnet["server.messages"] == "ok" and sonnet["server.tool_call"] == "ok"
    # the smoke test's steps (it runs the doctor): the models step fails with the tier named
    step = smoke.server_step(report, "server.models", "models")
    assert step["status"] == "FAIL" and step["detail"].startswith("The haiku tier's 'Qwen3-4B'")
    assert smoke.server_step(report, "server.messages", "messages")["status"] == "ok"


def test_the_selected_tiers_name_unserved_still_fails_as_before(tmp_path, capsys):
    code, report = diagnose_tiers(tmp_path, capsys, served=(SMALL,), listed=(SMALL,), haiku=SMALL)
    assert code == 1
    unserved = [f for f in errors(report) if f["id"] == "server.models"]
    assert [f["problem"][:39] for f in unserved] == ["The server does not serve 'Qwen3.5-27B'"]


def test_a_name_answered_but_not_listed_is_served_behind_a_gateway(tmp_path, capsys):
    """A gateway routing by "model" answers GET /v1/models from its default backend: the small name is not
    listed there, but its requests are answered."""
    code, report = diagnose_tiers(tmp_path, capsys, listed=(SERVED,), haiku=SMALL)
    assert code == 0 and report["ok"], json.dumps(errors(report), indent=1)
    (finding,) = [f for f in report["findings"] if f["id"] == "server.models" and SMALL in f["problem"]]
    assert finding["severity"] == "ok" and "answered 200: it is served" in finding["problem"]


def test_two_tiers_on_one_name_are_checked_once(tmp_path, capsys):
    code, report = diagnose_tiers(tmp_path, capsys, served=(SERVED,), listed=(SERVED,), opus=SMALL, haiku=SMALL)
    assert code == 1
    assert [m for m, _tools in TierServer.asked].count(SMALL) == 1
    (finding,) = errors(report)
    assert finding["problem"].startswith("The opus and haiku tiers' 'Qwen3-4B': ")
    assert "ANTHROPIC_DEFAULT_OPUS_MODEL and ANTHROPIC_DEFAULT_HAIKU_MODEL" in finding["fix"]


def test_with_one_name_nothing_more_is_asked(tmp_path, capsys):
    code, report = diagnose_tiers(tmp_path, capsys, served=(SERVED,), listed=(SERVED,))
    assert code == 0 and TierServer.asked == [(SERVED, False), (SERVED, True)]
    assert set(report["server"]["timings_ms"]) == {"health", "models", "messages", "tools"}
