"""The role's readiness wait (roles/vllm/tasks/ready.yml, run by the real ansible-playbook) asks the server on
the address it listens on.

The trap: with vllm_host set to an interface address the server does not answer on loopback, and a wait
on http://127.0.0.1:<port> runs out the whole vllm_ready_timeout (30 minutes by default). Here a stand-in
server listens only on 127.0.0.2 (a loopback address that 127.0.0.1 does not reach, as a host's own interface
address would not); the wait must find it within seconds. A wildcard vllm_host is still asked on 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest
import yaml

from conftest import ANSIBLE_PLAYBOOK, VllmStandIn, playbook_env, serve

SERVED = "Qwen3.5-27B"
SMALL = "Qwen3-4B"
TOKEN = "ready-address-token"
pytestmark = pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible-playbook not in this venv")


class StandIn(VllmStandIn):
    """/health and /v1/models as vLLM answers them, with the token enforced."""

    served = [SERVED]
    token = TOKEN


class SmallStandIn(StandIn):
    """An instance with a served name of its own (a tier's, served_model_tiers): the wait asks for that name."""

    served = [SMALL]


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_the_wait_asks_the_address_the_server_listens_on(tmp_path):
    # case: (vllm_host, the only address the stand-in listens on)
    cases = {"interface_address": ("127.0.0.2", "127.0.0.2"), "wildcard": ("0.0.0.0", "127.0.0.1")}
    if _ipv6_loopback():
        cases["ipv6_address"] = ("::1", "::1")
    cases["own_served_name"] = ("0.0.0.0", "127.0.0.1")
    servers = {name: serve(SmallStandIn if name == "own_served_name" else StandIn, listen)
               for name, (_host, listen) in cases.items()}
    try:
        local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
        hosts = {name: dict(local, vllm_host=host, served_model_name=SERVED, llm_api_token=TOKEN,
                            vllm_ready_timeout=8, standin_port=servers[name].server_address[1],
                            instance_served=SMALL if name == "own_served_name" else "")
                 for name, (host, _listen) in cases.items()}
        (tmp_path / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": {"gpu_hosts": {"hosts": hosts}}}}))
        play = [{"name": "The role's readiness wait", "hosts": "gpu_hosts", "gather_facts": False, "tasks": [
            # One instance on the stand-in's port, no unit (systemd is not asked here); set_fact outranks
            # the role's own vars/main.yml.
            {"name": "One instance on the stand-in's port", "ansible.builtin.set_fact": {
                "__vllm_instance_list": [{"name": "main", "port": "{{ standin_port }}", "unit": "",
                                          "served_model_name": "{{ instance_served }}"}]}},
            {"name": "Run the role's ready.yml",
             "ansible.builtin.include_role": {"name": "claude_vllm.fleet.vllm", "tasks_from": "ready.yml"}}]}]
        (tmp_path / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False))
        env = playbook_env(ANSIBLE_FORKS="8")
        result = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(tmp_path / "hosts.yml"), str(tmp_path / "play.yml")],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    finally:
        for httpd in servers.values():
            httpd.shutdown()
    assert result.stdout.strip(), result.stderr[-3000:]
    report = json.loads(result.stdout)
    outcomes = {}
    for task in report["plays"][0]["tasks"]:
        if task["task"]["name"].endswith("Wait until each instance answers and serves exactly its served_model_name"):
            for host, outcome in task["hosts"].items():
                outcomes[host] = outcome["results"][0] if "results" in outcome else outcome
    assert set(outcomes) == set(cases), result.stdout[-3000:]
    for name, outcome in outcomes.items():
        assert not outcome.get("failed"), (name, outcome.get("msg"))
        expected = [SMALL] if name == "own_served_name" else [SERVED]  # an empty name: the shared one
        assert outcome["served"] == expected and outcome["waited"] < 5, (name, outcome)
    assert report["stats"]["interface_address"]["failures"] == 0
