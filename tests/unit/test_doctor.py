"""Offline checks of tools/claude-vllm-doctor, with settings files built in tmp_path.

The online checks talk to a real vLLM server; they were verified by hand (tools/README.md) and run
automatically in the end-to-end Molecule scenario. No fake server here.
"""

from __future__ import annotations

import copy
import glob
import json
import os
import re
import subprocess
import sys
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader

import pytest

from conftest import REPO

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
    code, report = run(tmp_path, settings(ANTHROPIC_DEFAULT_HAIKU_MODEL="Qwen3-0.6B"), capsys=capsys)
    assert code == 1
    finding = only_error(report, "tiers.unequal", "ANTHROPIC_DEFAULT_*_MODEL")
    assert "Qwen3-0.6B" in finding["problem"] and SERVED in finding["problem"]
    assert "served-model-name" in finding["fix"]


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
