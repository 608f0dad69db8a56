"""The env block the claude_code role writes (roles/claude_code/vars/main.yml, __claude_code_managed_env), computed
by the real ansible-playbook from the bundled inventory: each tier's ANTHROPIC_DEFAULT_<TIER>_MODEL comes from
served_model_tiers, else served_model_name; without tiers (the default) the block is what it always was.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import ANSIBLE_PLAYBOOK, REPO, playbook_env

pytestmark = pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible-playbook not in this venv")

CASES = {
    "default": {},
    "haiku_small": {"served_model_tiers": {"haiku": "Qwen3-4B"}},
    "null_tiers": {"served_model_tiers": None},
}
# The block before tiers existed (commit 9cb0c00, the bundled inventory): every tier is served_model_name.
BEFORE = {
    "ANTHROPIC_BASE_URL": "http://127.0.0.1:8000",
    "ANTHROPIC_DEFAULT_SONNET_MODEL": "Qwen3.5-27B",
    "ANTHROPIC_DEFAULT_OPUS_MODEL": "Qwen3.5-27B",
    "ANTHROPIC_DEFAULT_HAIKU_MODEL": "Qwen3.5-27B",
    "API_TIMEOUT_MS": "3000000",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "CLAUDE_CODE_ATTRIBUTION_HEADER": "0",
    "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "32000",
    "CLAUDE_CODE_MAX_CONTEXT_TOKENS": "65536",
}


@pytest.fixture(scope="module")
def envs(tmp_path_factory):
    """{case: the managed env block}, one ansible-playbook run for every case."""
    work = tmp_path_factory.mktemp("tiers")
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory = {"all": {"children": {"workstations": {"hosts": {name: dict(local, **variables)
                                                                 for name, variables in CASES.items()}}}}}
    (work / "inventory/group_vars").mkdir(parents=True)
    (work / "inventory/hosts.yml").write_text(yaml.safe_dump(inventory))
    shutil.copy(REPO / "inventory/default/group_vars/all.yml", work / "inventory/group_vars/all.yml")
    role = REPO / "roles/claude_code"
    play = [{"name": "The claude_code role's env block", "hosts": "workstations", "gather_facts": False, "tasks": [
        {"name": "Load the role's defaults", "ansible.builtin.include_vars": str(role / "defaults/main.yml")},
        {"name": "Load the role's variables", "ansible.builtin.include_vars": str(role / "vars/main.yml")},
        {"name": "Show the env block", "ansible.builtin.debug": {"var": "__claude_code_managed_env"}},
    ]}]
    (work / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    result = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(work / "inventory/hosts.yml"), str(work / "play.yml")],
                            cwd=work, env=playbook_env(ANSIBLE_FORKS="4"), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    report = json.loads(result.stdout)
    shown = report["plays"][0]["tasks"][-1]["hosts"]
    return {host: outcome["__claude_code_managed_env"] for host, outcome in shown.items()}


def test_without_tiers_the_block_is_what_it_was(envs):
    assert envs["default"] == BEFORE
    assert envs["null_tiers"] == BEFORE


def test_a_tier_of_its_own_gets_its_name_and_only_that_tier(envs):
    assert envs["haiku_small"] == dict(BEFORE, ANTHROPIC_DEFAULT_HAIKU_MODEL="Qwen3-4B")
