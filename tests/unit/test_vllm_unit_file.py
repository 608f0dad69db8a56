"""roles/vllm/templates/vllm.service.j2 rendered by the real ansible-playbook: ProtectHome= follows where the
model and the state directory are, and systemd 252 accepts the result (systemd-analyze verify, and the
exposure score of --offline security).

The trap: ProtectHome=yes was unconditional, so a local model under /home, /root or /run/user (found by the
preflight, run as root) was hidden from the service and vLLM failed at start.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ANSIBLE_PLAYBOOK, REPO, playbook_env

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
RO_TMPFS = "TemporaryFileSystem=/home:ro /root:ro /run/user:ro"
pytestmark = pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible-playbook not in this venv")

CASES = {
    "default": {"vllm_model": "/srv/models/tiny"},
    "hub_model": {"vllm_model": "Qwen/Qwen3.5-27B"},
    "home_model": {"vllm_model": "/home/models/tiny"},
    "root_model": {"vllm_model": "/root/models/tiny"},
    "home_state": {"vllm_model": "/srv/models/tiny", "vllm_state_dir": "/home/vllm"},
    "two_instances": {"vllm_model": "/srv/models/tiny",
                      "vllm_instances": [{"name": "a"}, {"name": "b", "port": 8001, "model": "/home/alice/m b"}]},
    # A tier on its own model (served_model_tiers {haiku: Qwen3-4B}): the small instance serves its own name.
    "tier_instance": {"vllm_model": "/srv/models/big",
                      "vllm_instances": [{"name": "big"}, {"name": "small", "port": 8001, "model": "/srv/models/small",
                                                           "served_model_name": "Qwen3-4B"}]},
}


@pytest.fixture(scope="module")
def units(tmp_path_factory):
    """{case: {instance name: unit text}}, one ansible-playbook run for every case."""
    work = tmp_path_factory.mktemp("units")
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory = {"all": {"children": {"gpu_hosts": {"hosts": {name: dict(local, case=variables)
                                                              for name, variables in CASES.items()}}}}}
    (work / "inventory/group_vars").mkdir(parents=True)
    (work / "inventory/hosts.yml").write_text(yaml.safe_dump(inventory))
    shutil.copy(REPO / "inventory/default/group_vars/all.yml", work / "inventory/group_vars/all.yml")
    out = work / "out"
    out.mkdir()
    role = REPO / "roles/vllm"
    play = [{"name": "Render the vllm unit", "hosts": "gpu_hosts", "gather_facts": False, "tasks": [
        # The role's defaults and internal variables, as the role sees them; each case's own values on top.
        {"name": "Load the role's defaults", "ansible.builtin.include_vars": str(role / "defaults/main.yml")},
        {"name": "Load the role's variables", "ansible.builtin.include_vars": str(role / "vars/main.yml")},
        {"name": "Put each case's own values back on top", "ansible.builtin.set_fact": {
            "vllm_model": "{{ case.vllm_model }}",
            "vllm_state_dir": "{{ case.vllm_state_dir | default('/var/lib/vllm') }}",
            "vllm_instances": "{{ case.vllm_instances | default([{'name': 'main'}]) }}",
            # What the role's earlier tasks find out on a host (the device, the install in use, hub commits).
            "__vllm_device": "cpu", "__vllm_venv": "/opt/vllm/venv", "__vllm_model_commits": {}}},
        {"name": "Render each instance's unit", "ansible.builtin.template": {
            "src": str(role / "templates/vllm.service.j2"),
            "dest": f"{out}/{{{{ inventory_hostname }}}}-{{{{ item.name }}}}.service", "mode": "0644"},
         "loop": "{{ __vllm_instance_list }}"},
    ]}]
    (work / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    env = playbook_env(ANSIBLE_FORKS="8")
    result = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(work / "inventory/hosts.yml"), str(work / "play.yml")],
                            cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    rendered = {}
    for path in out.iterdir():
        case, instance = path.stem.rsplit("-", 1)
        rendered.setdefault(case, {})[instance] = path.read_text()
    assert set(rendered) == set(CASES), sorted(rendered)
    return rendered


def directives(text: str, name: str) -> list[str]:
    return re.findall(rf"^{name}=(.*)$", text, flags=re.MULTILINE)


def hardening(text: str) -> list[str]:
    """The path-related lines of the hardening section, in order."""
    return [line for line in text.splitlines()
            if line.startswith(("ProtectHome=", "TemporaryFileSystem=", "ReadWritePaths=", "BindPaths=",
                                "BindReadOnlyPaths="))]


def test_nothing_under_a_home_renders_the_unit_as_before(units):
    for case in ("default", "hub_model"):
        assert hardening(units[case]["main"]) == ["ReadWritePaths=/var/lib/vllm", "ProtectHome=yes"], case
        assert "\nProtectSystem=strict\nReadWritePaths=/var/lib/vllm\nProtectHome=yes\nPrivateTmp=yes\n" \
            in units[case]["main"]


def test_a_model_under_a_home_is_bound_read_only_behind_a_tmpfs(units):
    assert hardening(units["home_model"]["main"]) == [
        "ReadWritePaths=/var/lib/vllm", "ProtectHome=tmpfs", RO_TMPFS, 'BindReadOnlyPaths="/home/models/tiny"']
    assert hardening(units["root_model"]["main"]) == [
        "ReadWritePaths=/var/lib/vllm", "ProtectHome=tmpfs", RO_TMPFS, 'BindReadOnlyPaths="/root/models/tiny"']


def test_a_state_directory_under_a_home_is_bound_writable(units):
    assert hardening(units["home_state"]["main"]) == ["ProtectHome=tmpfs", RO_TMPFS, 'BindPaths="/home/vllm"']
    assert directives(units["home_state"]["main"], "WorkingDirectory") == ["/home/vllm"]


def test_each_instance_sees_only_its_own_model(units):
    assert hardening(units["two_instances"]["a"]) == ["ReadWritePaths=/var/lib/vllm", "ProtectHome=yes"]
    assert hardening(units["two_instances"]["b"]) == [
        "ReadWritePaths=/var/lib/vllm", "ProtectHome=tmpfs", RO_TMPFS, 'BindReadOnlyPaths="/home/alice/m b"']


def served_name_arguments(text: str) -> list[str]:
    return re.findall(r'"--served-model-name" "([^"]*)"', text)


def test_an_instance_serves_its_own_name_and_the_others_the_shared_one(units):
    assert served_name_arguments(units["tier_instance"]["small"]) == ["Qwen3-4B"]
    assert directives(units["tier_instance"]["small"], "Description") == [
        "vLLM serving Qwen3-4B on port 8001 (instance small)"]
    assert served_name_arguments(units["tier_instance"]["big"]) == ["Qwen3.5-27B"]
    assert directives(units["tier_instance"]["big"], "Description") == [
        "vLLM serving Qwen3.5-27B on port 8000 (instance big)"]


def test_without_a_name_of_its_own_the_unit_serves_the_shared_name_as_before(units):
    for case in ("default", "two_instances"):
        for name, text in units[case].items():
            assert served_name_arguments(text) == ["Qwen3.5-27B"], (case, name)
    assert directives(units["default"]["main"], "Description") == [
        "vLLM serving Qwen3.5-27B on port 8000 (instance main)"]


def _loadable(text: str, directory: Path) -> Path:
    """The unit with its venv's interpreter replaced by this machine's (verify checks the binary exists)."""
    directory.mkdir(exist_ok=True)
    text = re.sub(r"^ExecStart=\S+", "ExecStart=/usr/bin/python3", text, flags=re.MULTILINE)
    text = re.sub(r"^(User|Group)=.*$", r"\1=root", text, flags=re.MULTILINE)
    path = directory / "vllm-check.service"
    path.write_text(text)
    return path


@pytest.mark.skipif(not SYSTEMD_ANALYZE, reason="no systemd-analyze here")
def test_systemd_accepts_every_rendered_unit(units, tmp_path):
    for case, instances in units.items():
        for instance, text in instances.items():
            unit = _loadable(text, tmp_path / f"{case}-{instance}")
            result = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(unit)], capture_output=True,
                                    text=True, timeout=60, check=False)
            complaints = [line for line in (result.stdout + result.stderr).splitlines()
                          if "vllm-check.service" in line]
            assert result.returncode == 0 and not complaints, (case, instance, result.stdout + result.stderr)


def _exposure(unit: Path) -> float:
    result = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=yes", "--no-pager", str(unit)],
                            capture_output=True, text=True, timeout=60, check=False)
    found = re.findall(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert found, result.stdout + result.stderr
    return float(found[-1])


@pytest.mark.skipif(not SYSTEMD_ANALYZE, reason="no systemd-analyze here")
def test_a_model_under_a_home_costs_little_exposure(units, tmp_path):
    """tmpfs plus one bind is scored a little worse than yes, far better than no ProtectHome at all."""
    default = _exposure(_loadable(units["default"]["main"], tmp_path / "default"))
    home = _exposure(_loadable(units["home_model"]["main"], tmp_path / "home"))
    unprotected = _exposure(_loadable(units["default"]["main"].replace("ProtectHome=yes", "ProtectHome=no"),
                                      tmp_path / "unprotected"))
    print(f"exposure: ProtectHome=yes {default}, tmpfs + bind {home}, no {unprotected}")
    assert default <= home < unprotected and home - default <= 0.3, (default, home, unprotected)
