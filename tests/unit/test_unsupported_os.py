"""Each role refuses an operating system it has no variables for, by name, before changing anything.

The real ansible-playbook runs the role on this machine (local connection, the bundled default
inventory) with the facts of a macOS workstation given as extra vars; the first task must stop it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import ANSIBLE_PLAYBOOK, REPO, playbook_env

MACOS_FACTS = {"distribution": "MacOSX", "os_family": "Darwin", "distribution_major_version": "15",
               "distribution_version": "15.1",
               "kernel": "24.6.0", "architecture": "arm64"}


def run_role(tmp_path: Path, role: str) -> tuple[int, dict]:
    play = [{"name": "Apply one role", "hosts": "localhost", "gather_facts": False,
             "tasks": [{"name": "Apply the role", "ansible.builtin.include_role": {"name": "claude_vllm.fleet." + role}}]}]
    (tmp_path / "play.yml").write_text(json.dumps(play))
    env = playbook_env()
    result = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(REPO / "inventory" / "default"),
                             str(tmp_path / "play.yml"), "-e", json.dumps({"ansible_facts": MACOS_FACTS})],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.stdout.strip(), result.stderr[-3000:]
    return result.returncode, json.loads(result.stdout)


@pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible-playbook not in this venv")
@pytest.mark.parametrize("role, group", [("claude_code", "workstations"), ("vllm", "gpu_hosts"),
                                         ("gateway", "gateways"), ("nvidia_cuda", "gpu_hosts")])
def test_role_refuses_an_unknown_os_first(tmp_path, role, group):
    rc, report = run_role(tmp_path, role)
    assert rc != 0
    tasks = [task for play in report["plays"] for task in play["tasks"]]
    failed = [task for task in tasks if task["hosts"]["localhost"].get("failed")]
    assert len(failed) == 1, [task["task"]["name"] for task in failed]
    message = failed[0]["hosts"]["localhost"]["msg"]
    message = message if isinstance(message, str) else " ".join(message)
    assert "MacOSX" in message and "not supported" in message and "Fix:" in message, message
    assert not any(task["hosts"]["localhost"].get("changed") for task in tasks)
