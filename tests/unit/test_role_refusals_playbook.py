"""The roles' own validation, run by the real ansible-playbook: bad input is refused before any change.

Each case is a stand-in host with the local connection and its own bad variable, so one run per role covers
them all. The runs use --check and the role's real tasks (argument specs, OS variables, validate.yml); each
host must fail at the role's "Refuse bad input" task with one message naming the variable, having run
nothing after it, with no change reported and no file written.
"""

from __future__ import annotations

import getpass
import json
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ANSIBLE_PLAYBOOK, REPO, playbook_env

REFUSE_TASK = "Preflight | Refuse bad input (nothing has been changed on this host)"
ME = getpass.getuser()
pytestmark = pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible-playbook not in this venv")


def _my_account_is_accepted() -> bool:
    """The runner's own account is a managed user in some cases: root or a uid >= 1000 raises no problem."""
    uid = pwd.getpwnam(ME).pw_uid
    return uid == 0 or 1000 <= uid != 65534


def _snapshot(path: Path):
    try:
        status = path.lstat()
    except FileNotFoundError:
        return None
    return (status.st_ino, status.st_mtime_ns, status.st_size)


def run_role(tmp_path: Path, role: str, group: str, cases: dict, extra_groups: dict | None = None,
             play_vars: dict | None = None) -> dict:
    """Run `role` on one local stand-in host per case (host variables = the case's bad input), in --check."""
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory = {"all": {"children": {group: {"hosts": {name: dict(local, **variables)
                                                        for name, variables in cases.items()}}}}}
    inventory["all"]["children"].update(extra_groups or {})
    inventory_dir = tmp_path / "inventory"
    (inventory_dir / "group_vars").mkdir(parents=True)
    (inventory_dir / "hosts.yml").write_text(yaml.safe_dump(inventory))
    shutil.copy(REPO / "inventory/default/group_vars/all.yml", inventory_dir / "group_vars/all.yml")
    play = [{"name": f"Refusals of {role}", "hosts": group, "become": False, "gather_facts": True,
             "vars": play_vars or {}, "roles": [{"role": "claude_vllm.fleet." + role}]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    env = playbook_env(ANSIBLE_FORKS="8")
    result = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(inventory_dir / "hosts.yml"), str(tmp_path / "play.yml"),
                             "--check"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.stdout.strip(), result.stderr[-3000:]
    report = json.loads(result.stdout)
    tasks_run = {host: [] for host in cases}
    refusals, failures = {}, {}
    for task in report["plays"][0]["tasks"]:
        for host, outcome in task["hosts"].items():
            if host not in tasks_run or outcome.get("skipped"):
                continue
            tasks_run[host].append(task["task"]["name"])
            if outcome.get("failed"):
                failures[host] = outcome.get("msg")
            if task["task"]["name"].endswith(REFUSE_TASK) and outcome.get("failed"):
                refusals[host] = outcome["msg"][1:]
    return {"rc": result.returncode, "stats": report["stats"], "tasks": tasks_run, "refusals": refusals,
            "failures": failures, "output": result.stdout + result.stderr}


def assert_refused(run: dict, cases: dict, expected: dict, exactly_one: bool = True):
    assert run["rc"] != 0
    for host in cases:
        assert run["stats"][host]["changed"] == 0, (host, run["stats"][host])
        assert run["stats"][host]["failures"] == 1, (host, run["stats"][host], run["output"][-3000:])
        assert run["tasks"][host][-1].endswith(REFUSE_TASK), (host, run["tasks"][host][-3:])  # nothing ran after
        problems = run["refusals"][host]
        for fragment in expected[host]:
            assert any(fragment in problem for problem in problems), (host, fragment, problems)
        if exactly_one:
            assert len(problems) == 1, (host, problems)


CLAUDE_CODE_CASES = {
    "credentials": {"anthropic_base_url": "http://fleetuser:s3cr3t-pass@gpu:8000"},
    "newline_url": {"anthropic_base_url": "http://gpu:8000\n"},
    "quote_name": {"served_model_name": 'Qwen"3.5'},
    "big_len": {"vllm_max_model_len": "big"},
    "huge_len": {"vllm_max_model_len": 1e12},
    "port": {"vllm_port": 70000},
    "system_user": {"claude_code_users": ["bin"]},
    "duplicate_user": {"claude_code_users": [ME, {"name": ME, "env": {"X": "1"}}]},
    "typo_key": {"claude_code_users": [{"name": ME, "envv": {"GITHUB_TOKEN": "ghp_notshownvalue"}}]},
    "env_key": {"claude_code_extra_env": {"BAD KEY=x": "1"}},
    "env_value": {"claude_code_extra_env": {"GITHUB_TOKEN": "ghp_notshown\nvalue"}},
    "slash_tier": {"served_model_tiers": {"haiku": "Qwen/Qwen3-4B"}},
}
CLAUDE_CODE_EXPECTED = {
    "credentials": ["anthropic_base_url ('http://***@gpu:8000') carries user information"],
    "newline_url": ["anthropic_base_url ('http://gpu:8000\\n') contains whitespace or a control character"],
    "quote_name": ["served_model_name ('Qwen\"3.5') contains characters a served id cannot carry"],
    "big_len": ["vllm_max_model_len ('big') is not a whole number"],
    "huge_len": ["vllm_max_model_len (1000000000000.0) is not a whole number"],
    "port": ["vllm_port (70000) must be a TCP port"],
    "system_user": ["claude_code_users: user 'bin' is a system account"],
    "duplicate_user": [f"claude_code_users lists user '{ME}' 2 times"],
    "typo_key": ["claude_code_users: item 1", "'envv' -> 'env'"],
    "env_key": ["claude_code_extra_env: 'BAD KEY=x' is not an environment variable name"],
    "env_value": ["claude_code_extra_env.GITHUB_TOKEN contains a NUL, a newline"],
    "slash_tier": ["served_model_tiers.haiku ('Qwen/Qwen3-4B') contains '/'"],
}


@pytest.mark.skipif(not Path("/bin").is_dir() or "bin" not in {p.pw_name for p in pwd.getpwall()},
                    reason="no 'bin' account here")
def test_claude_code_refuses_each_bad_input_before_any_change(tmp_path):
    settings = Path(pwd.getpwnam(ME).pw_dir) / ".claude" / "settings.json"
    before = (_snapshot(settings), _snapshot(Path("/bin/.claude")))
    run = run_role(tmp_path, "claude_code", "workstations", CLAUDE_CODE_CASES)
    assert_refused(run, CLAUDE_CODE_CASES, CLAUDE_CODE_EXPECTED, exactly_one=_my_account_is_accepted())
    assert (_snapshot(settings), _snapshot(Path("/bin/.claude"))) == before  # no file written
    for secret in ("fleetuser", "s3cr3t", "ghp_notshown"):
        assert secret not in run["output"]


GATEWAY_BACKENDS = {"backends": {"hosts": {"gpu-standin": {"ansible_host": "10.0.0.5"}}}}
GATEWAY_CASES = {
    "quote_name": {"served_model_name": 'Qwen"3.5'},   # passed, then 'haproxy -c' refused the config mid-run
    "port": {"vllm_port": "abc"},                       # was a raw argument-spec error naming gateway_port too
    "socket": {"gateway_admin_socket": "/run/haproxy/admin sock"},
    "timeout": {"gateway_timeout_client": "50 min"},
}
GATEWAY_EXPECTED = {
    "quote_name": ["served_model_name ('Qwen\"3.5') contains characters", "haproxy -c"],
    "port": ["vllm_port ('abc') must be a TCP port"],
    "socket": ["gateway_admin_socket ('/run/haproxy/admin sock') must be an absolute path"],
    "timeout": ["gateway_timeout_client ('50 min') is not an HAProxy time"],
}


def test_gateway_refuses_each_bad_input_before_haproxy_is_installed(tmp_path):
    run = run_role(tmp_path, "gateway", "gateways", GATEWAY_CASES, GATEWAY_BACKENDS,
                   {"gateway_backend_group": "backends"})
    assert_refused(run, GATEWAY_CASES, GATEWAY_EXPECTED)


VLLM_CASES = {
    "huge_len": {"vllm_max_model_len": 1e12},
    "bool_len": {"vllm_max_model_len": True},
    "quote_name": {"served_model_name": "Qwen$HOME"},
    "no_install_kept": {"vllm_installs_kept": 0},
    # Tiers on their own served names (served_model_tiers): the other hosts serve Qwen3.5-27B only.
    "tier_unserved": {"served_model_tiers": {"haiku": "Qwen3-4B"}},
    "bad_tiers": {"served_model_tiers": {"fast": "Qwen3-4B"}},
    "unasked_name": {"vllm_instances": [{"name": "main", "served_model_name": "Qwen3-8B"}]},
}
VLLM_EXPECTED = {
    "huge_len": ["vllm_max_model_len (1000000000000.0) is not a whole number"],
    "bool_len": ["vllm_max_model_len (True) is not a whole number"],
    "quote_name": ["served_model_name ('Qwen$HOME') contains characters a served id cannot carry ('$')"],
    "no_install_kept": ["vllm_installs_kept (0) must be 1 or more"],
    "tier_unserved": ["served_model_tiers.haiku: the haiku tier asks for 'Qwen3-4B', but no vLLM instance"],
    "bad_tiers": ["served_model_tiers has the key 'fast', which is not a tier alias"],
    "unasked_name": ["vllm_instances[main].served_model_name ('Qwen3-8B') is none of the names"],
}


def test_vllm_refuses_each_bad_input_before_any_change(tmp_path):
    run = run_role(tmp_path, "vllm", "gpu_hosts", VLLM_CASES, play_vars={"vllm_device": "cpu"})
    assert_refused(run, VLLM_CASES, VLLM_EXPECTED)


# An enumeration (choices in meta/argument_specs.yml) is checked by Ansible itself, before the role's first task:
# the message is Ansible's, and it names the variable, the allowed values and the value given.
CHOICE_CASES = {
    "claude_code": ("workstations", {"claude_code_invalid_json": "overwrite",
                                     "claude_code_settings_scope": "system"}),
    "vllm": ("gpu_hosts", {"vllm_device": "gpu"}),
    "gateway": ("gateways", {"gateway_tls_min_version": "TLSv1.1"}),
    "nvidia_cuda": ("gpu_hosts", {"nvidia_driver_source": "runfile", "nvidia_driver_kernel_modules": "closed",
                                  "nvidia_driver_package_scheme": "branch", "nvidia_reboot": "always"}),
}
CHOICE_EXPECTED = {
    "claude_code_invalid_json": "value of claude_code_invalid_json must be one of: fail, backup_and_replace, got: overwrite",
    "claude_code_settings_scope": "value of claude_code_settings_scope must be one of: user, managed, got: system",
    "vllm_device": "value of vllm_device must be one of: cuda, cpu, auto, got: gpu",
    "gateway_tls_min_version": "value of gateway_tls_min_version must be one of: TLSv1.2, TLSv1.3, got: TLSv1.1",
    "nvidia_driver_source": "value of nvidia_driver_source must be one of: cuda_repo, distro, got: runfile",
    "nvidia_driver_kernel_modules": "value of nvidia_driver_kernel_modules must be one of: open, proprietary, got: closed",
    "nvidia_driver_package_scheme": "value of nvidia_driver_package_scheme must be one of: auto, branch_in_name, pinning",
    "nvidia_reboot": "value of nvidia_reboot must be one of: auto, never, got: always",
}


@pytest.mark.parametrize("role", sorted(CHOICE_CASES))
def test_a_value_outside_the_choices_is_refused_first_naming_the_variable(tmp_path, role):
    group, variables = CHOICE_CASES[role]
    cases = {name: {name: value} for name, value in variables.items()}
    run = run_role(tmp_path, role, group, cases)
    assert run["rc"] != 0
    for host in cases:
        assert run["stats"][host]["changed"] == 0 and run["stats"][host]["failures"] == 1, (host, run["stats"][host])
        assert len(run["tasks"][host]) == 2, run["tasks"][host]  # facts, then the argument check: nothing else ran
        assert "Validating arguments against arg spec 'main'" in run["tasks"][host][-1], run["tasks"][host]
        assert CHOICE_EXPECTED[host] in run["failures"][host], (host, run["failures"][host])
