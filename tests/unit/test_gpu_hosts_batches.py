"""playbooks/gpu_hosts.yml's batching, run by the real ansible-playbook on stand-in hosts.

The plays' own header (the reachability play, the stage play, `serial`, `max_fail_percentage`) is taken from
the playbook; the stage play's role and the batches' roles are replaced by tasks that record the host and
fail where asked. The stand-ins use the local
connection and change nothing (one debug task); one points at a closed port so it is unreachable.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ANSIBLE_PLAYBOOK, REPO, playbook_env

PLAYBOOK = REPO / "playbooks" / "gpu_hosts.yml"


def start(tmp_path: Path, extra: dict, group_vars: dict | None = None) -> subprocess.Popen:
    """Start one run of the batching plays on the stand-ins (see finish)."""
    plays = yaml.safe_load(PLAYBOOK.read_text())
    check, stage, batched = plays[0], dict(plays[1]), dict(plays[2])
    assert [task["ansible.builtin.include_role"]["tasks_from"] for task in stage.pop("tasks")] == ["stage"]
    stage.update(become=False, gather_facts=False, tasks=[
        {"name": "staged", "ansible.builtin.debug": {"msg": "{{ inventory_hostname }}"}},
        {"name": "fail the stage where asked", "ansible.builtin.fail": {"msg": "asked to fail"},
         "when": "inventory_hostname in fail_stage_hosts | default([])"},
    ])
    batched.pop("roles")
    batched.update(become=False, gather_facts=False, tasks=[
        {"name": "record", "ansible.builtin.debug": {"msg": "{{ inventory_hostname }}"}},
        {"name": "fail where asked", "ansible.builtin.fail": {"msg": "asked to fail"},
         "when": "inventory_hostname in fail_hosts | default([])"},
    ])
    (tmp_path / "play.yml").write_text(yaml.safe_dump([check, stage, batched]))
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    hosts = {name: dict(local) for name in ("h1", "h2", "h4", "h5")}
    hosts["h3"] = {"ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": 1,
                   "ansible_ssh_common_args": "-o ConnectTimeout=5 -o StrictHostKeyChecking=no"}
    inventory = {"all": {"children": {"gpu_hosts": {"hosts": dict(sorted(hosts.items())),
                                                    "vars": group_vars or {}}}}}
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    env = playbook_env(repo_config=False, ANSIBLE_HOST_KEY_CHECKING="False")
    return subprocess.Popen([str(ANSIBLE_PLAYBOOK), "-i", str(tmp_path / "hosts.yml"), str(tmp_path / "play.yml"),
                             "-e", json.dumps(extra)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> dict:
    """Wait for a run: its exit status, the hosts of each batch that ran the roles' stand-in, the recap."""
    try:
        stdout, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise
    assert stdout.strip(), stderr[-3000:]
    report = json.loads(stdout)
    def hosts_of(name, plays):
        return [sorted(host for task in play["tasks"] if task["task"]["name"] == name for host in task["hosts"])
                for play in plays]
    staged = hosts_of("staged", report["plays"][1:2])
    batches = hosts_of("record", report["plays"][2:])
    return {"rc": process.returncode, "staged": staged[0] if staged else [],
            "batches": [b for b in batches if b], "stats": report["stats"]}


RUNS = {  # independent runs (each ansible-playbook mostly uses one core): the module starts them side by side
    "serial_2": ({"gpu_hosts_serial": 2}, None),
    "group_vars_5": ({}, {"gpu_hosts_serial": 5}),
    "h1_fails": ({"gpu_hosts_serial": 2, "fail_hosts": ["h1"]}, None),
    "h1_fails_allowed": ({"gpu_hosts_serial": 2, "fail_hosts": ["h1"], "gpu_hosts_max_fail_percentage": 60}, None),
    "h4_stage_fails": ({"gpu_hosts_serial": 2, "fail_stage_hosts": ["h4"]}, None),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    started = {name: start(tmp_path_factory.mktemp(name), extra, group_vars)
               for name, (extra, group_vars) in RUNS.items()}
    try:
        return {name: finish(process) for name, process in started.items()}
    finally:
        for process in started.values():
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible-playbook not in this venv")
def test_unreachable_host_is_set_aside_and_the_rest_go_in_batches(runs):
    result = runs["serial_2"]
    assert result["rc"] != 0  # the unreachable host shows in the exit status and the recap
    assert result["stats"]["h3"]["unreachable"] == 1
    # h3 is not in any batch; the others all ran, two at a time
    assert result["batches"] == [["h1", "h2"], ["h4"], ["h5"]] or result["batches"] == [["h1", "h2"], ["h4", "h5"]]
    # every reachable host was staged at once, before the first batch
    assert result["staged"] == ["h1", "h2", "h4", "h5"]
    assert all(result["stats"][h]["ok"] >= 2 for h in ("h1", "h2", "h4", "h5"))


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible-playbook not in this venv")
def test_serial_is_not_read_from_group_vars(runs):
    # `serial` is templated without a host: the inventory's group_vars value (5) is not seen, the default is
    result = runs["group_vars_5"]
    assert max(len(b) for b in result["batches"]) < 4


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible-playbook not in this venv")
def test_a_failed_host_stops_later_batches_unless_allowed(runs):
    stopped = runs["h1_fails"]
    assert stopped["batches"] == [["h1", "h2"]]
    assert "h5" not in stopped["stats"] or stopped["stats"]["h5"]["ok"] <= 2  # the ping and the stage only
    allowed = runs["h1_fails_allowed"]
    assert ["h1", "h2"] in allowed["batches"] and any("h5" in b for b in allowed["batches"])


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible-playbook not in this venv")
def test_a_host_whose_stage_fails_stops_the_run_before_any_batch(runs):
    # a failed install or model fetch: no server anywhere is drained or restarted
    result = runs["h4_stage_fails"]
    assert result["rc"] != 0
    assert result["staged"] == ["h1", "h2", "h4", "h5"]
    assert result["batches"] == []
    assert result["stats"]["h4"]["failures"] == 1
