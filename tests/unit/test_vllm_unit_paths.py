"""Where a vLLM unit's files may live (plugins/filter/vllm_unit_paths.py), and the role's check that the service
user can read a local model (roles/vllm/files/vllm_model_readable.py, run here for real as an unprivileged user).

The traps: ProtectHome=yes hides a model under /home, /root or /run/user from the service although the preflight
(run as root) found it; and a model root can read but the service user cannot passes the preflight and fails
when vLLM starts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from conftest import REPO, load_plugin, make_searchable

paths = load_plugin("plugins/filter/vllm_unit_paths.py", "vllm_unit_paths_filters")
SCRIPT = REPO / "roles/vllm/files/vllm_model_readable.py"
DEFAULT_READ = ["/opt/vllm", "/etc/vllm", "/usr"]  # install dir, config dir, the interpreter's prefix
STATE = ["/var/lib/vllm"]
RO_HOMES = ["/home:ro", "/root:ro", "/run/user:ro"]
PYTHON = "/usr/bin/python3"  # the role's vllm_python: the system interpreter, runnable by any user


def test_nothing_under_a_home_keeps_protect_home_yes():
    result = paths.vllm_unit_paths(["/srv/models/q", *DEFAULT_READ], STATE)
    assert result == {"protect_home": "yes", "temporary_file_system": [], "bind": [], "bind_read_only": [],
                      "read_write": ["/var/lib/vllm"]}


def test_hugging_face_ids_are_not_paths():
    assert paths.vllm_unit_paths(["Qwen/Qwen3.5-27B", "", *DEFAULT_READ], STATE)["protect_home"] == "yes"


@pytest.mark.parametrize("model", ["/home/models/tiny", "/root/models/q", "/run/user/1000/m", "/home/alice/m/"])
def test_a_model_under_a_home_is_bound_read_only_and_the_other_homes_stay_hidden(model):
    result = paths.vllm_unit_paths([model, *DEFAULT_READ], STATE)
    assert result == {"protect_home": "tmpfs", "temporary_file_system": RO_HOMES, "bind": [],
                      "bind_read_only": [model.rstrip("/")], "read_write": ["/var/lib/vllm"]}


def test_homelike_names_outside_the_homes_are_not_homes():
    for path in ["/homes/m", "/home2/m", "/rootfs/m", "/run/users/m", "/srv/home/m"]:
        assert paths.vllm_unit_paths([path], STATE)["protect_home"] == "yes", path


def test_a_state_directory_under_a_home_is_bound_writable():
    result = paths.vllm_unit_paths(["/srv/models/q", *DEFAULT_READ], ["/home/vllm/state"])
    assert result == {"protect_home": "tmpfs", "temporary_file_system": RO_HOMES, "bind": ["/home/vllm/state"],
                      "bind_read_only": [], "read_write": []}


def test_a_model_inside_the_state_directory_under_a_home_stays_read_only():
    result = paths.vllm_unit_paths(["/home/vllm/state/models/q", *DEFAULT_READ], ["/home/vllm/state"])
    assert result["bind"] == ["/home/vllm/state"] and result["bind_read_only"] == ["/home/vllm/state/models/q"]


def test_several_instances_and_an_interpreter_under_a_home():
    models = ["/home/alice/models/a", "/home/alice/models/a/sub", "/root/models/b", "/srv/models/c",
              "Qwen/Qwen3.5-27B", "/home/alice/models/a/"]
    result = paths.vllm_unit_paths(models + ["/opt/vllm", "/etc/vllm", "/root/.pyenv/versions/3.11.9"],
                                   ["/var/lib/vllm"])
    assert result == {"protect_home": "tmpfs", "temporary_file_system": RO_HOMES, "bind": [],
                      "bind_read_only": ["/home/alice/models/a", "/root/.pyenv/versions/3.11.9", "/root/models/b"],
                      "read_write": ["/var/lib/vllm"]}


def test_a_path_both_read_and_written_is_bound_writable_once():
    result = paths.vllm_unit_paths(["/home/x/state", "//home/x/state/../state"], ["/home/x/state/"])
    assert result["bind"] == ["/home/x/state"] and result["bind_read_only"] == []


# --- the readability check, for real ------------------------------------------------------------------------

def run_check(*directories, as_user=("65534", "65534")):
    """The role's command line: setpriv to the user, python3 -c SCRIPT DIR... (argv only, no shell)."""
    uid, gid = as_user
    result = subprocess.run(["setpriv", "--reuid", uid, "--regid", gid, "--clear-groups", PYTHON, "-c", SCRIPT.read_text(),
                             *map(str, directories)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv") or not os.path.exists(PYTHON),
                                reason="needs root, setpriv and /usr/bin/python3 (the role runs the check the same way)")


@pytest.fixture()
def model(tmp_path):
    """A model directory like the tiny one: world-readable files in a nested directory."""
    make_searchable(tmp_path)
    top = tmp_path / "models" / "tiny"
    (top / "tokenizer").mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer/tokenizer.json"):
        (top / name).write_text("{}")
        (top / name).chmod(0o644)
    for directory in (tmp_path / "models", top, top / "tokenizer"):
        directory.chmod(0o755)
    os.symlink("model.safetensors", top / "weights.link")
    return top


@needs_root
def test_a_readable_model_passes(model):
    report = run_check(model)
    assert report["uid"] == 65534 and report["groups"] == []
    assert report["models"][str(model)] == {"files": 4, "dirs": 2, "count": 0, "unreadable": []}
    assert paths.vllm_model_access_problems(json.dumps(report), [], str(model)) == []


@needs_root
def test_a_0640_file_is_unreadable_for_another_user_and_named(model):
    (model / "model.safetensors").chmod(0o640)
    report = run_check(model)
    result = report["models"][str(model)]
    # the file itself and the link to it: both named, the first in walk order first
    assert result["count"] == 2 and result["unreadable"][0]["path"] == str(model / "model.safetensors")
    assert result["unreadable"][0]["mode"] == "-rw-r-----" and result["unreadable"][0]["owner"] == "root:root"
    problems = paths.vllm_model_access_problems(report, [{"name": "main", "model": str(model)}], str(model),
                                                "vllm", "vllm", user_exists=False)
    assert len(problems) == 1
    assert problems[0].startswith("vllm_model (instance main): the local model directory")
    assert f"cannot read {model}/model.safetensors (-rw-r----- root:root) (2 unreadable paths in all)" in problems[0]
    assert f"Fix: chmod -R o+rX {model}" in problems[0] and "does not exist yet; checked as nobody" in problems[0]


@needs_root
def test_a_0700_directory_and_a_0700_parent_are_named(model):
    (model / "tokenizer").chmod(0o700)
    result = run_check(model)["models"][str(model)]
    assert result["unreadable"][0] == {"path": str(model / "tokenizer"), "mode": "drwx------", "owner": "root:root",
                                       "reason": "directory not listable and searchable"}
    (model / "tokenizer").chmod(0o755)
    model.parent.chmod(0o700)  # /home/alice with 0700, the model below it
    report = run_check(model)
    result = report["models"][str(model)]
    assert result["count"] == 1 and result["unreadable"][0]["path"] == str(model.parent)
    assert result["unreadable"][0]["reason"] == "not searchable"
    problem = paths.vllm_model_access_problems(report, [{"name": "coder", "model": str(model)}], "Qwen/Qwen3.5-27B",
                                               "vllm", "vllm")[0]
    assert problem.startswith("vllm_instances[coder].model: ")
    assert f"cannot enter {model.parent} (drwx------ root:root)" in problem
    assert f"chgrp vllm {model.parent} && chmod g+x {model.parent}" in problem


@needs_root
def test_the_group_grants_access_when_the_user_is_in_it(model, tmp_path):
    """0640 root:GROUP is readable by a member of GROUP: the fix the message proposes works."""
    (model / "model.safetensors").chmod(0o640)
    os.chown(model / "model.safetensors", 0, 65534)
    assert run_check(model, as_user=("65534", "65534"))["models"][str(model)]["count"] == 0


def test_no_output_or_bad_output_is_no_problem():
    assert paths.vllm_model_access_problems("") == []
    assert paths.vllm_model_access_problems("setpriv: not permitted") == []
    assert paths.vllm_model_access_problems({"models": {"/m": {"count": 0, "unreadable": []}}}) == []


# --- the role's preflight, by the real ansible-playbook (--check) --------------------------------------------

@needs_root
def test_the_role_refuses_a_model_the_service_user_cannot_read(model, tmp_path):
    """A 0700 model directory (root reads it, the service user does not) is refused before any change, named
    with the fix; a readable one raises no such problem (that host is refused for its other bad input only)."""
    refusals = pytest.importorskip("test_role_refusals_playbook")
    private = model.parent / "private"
    shutil.copytree(model, private, symlinks=True)
    private.chmod(0o700)
    cases = {"unreadable": {"vllm_model": str(private)},
             "readable": {"vllm_model": str(model), "vllm_max_model_len": True}}
    run = refusals.run_role(tmp_path / "run", "vllm", "gpu_hosts", cases, play_vars={"vllm_device": "cpu"})
    refusals.assert_refused(run, cases, {
        "unreadable": [f"vllm_model (instance main): the local model directory {private} is not readable by",
                       f"cannot read {private} (drwx------ root:root)", "Fix: "],
        "readable": ["vllm_max_model_len (True) is not a whole number"]})
    assert oct(private.stat().st_mode & 0o777) == "0o700"  # nothing changed
