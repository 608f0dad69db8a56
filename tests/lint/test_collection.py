"""The repository is the collection claude_vllm.fleet: ansible finds it here, and its plugins' documentation renders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

ANSIBLE_DOC = Path(sys.executable).parent / "ansible-doc"
ANSIBLE_GALAXY = Path(sys.executable).parent / "ansible-galaxy"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
GALAXY = yaml.safe_load((REPO / "galaxy.yml").read_text())
FQCN = f"{GALAXY['namespace']}.{GALAXY['name']}"
MODULES = sorted(p.stem for p in (REPO / "plugins/modules").glob("*.py"))


def test_the_repository_is_linked_as_the_collection():
    link = REPO / "collections/ansible_collections" / GALAXY["namespace"] / GALAXY["name"]
    assert link.is_symlink() and link.resolve() == REPO


def test_roles_live_only_in_roles_and_plugins_only_in_plugins():
    """No role-local library/ or filter_plugins/: every module and filter is the collection's, used by its FQCN."""
    stray = sorted(str(p.relative_to(REPO)) for pattern in ("roles/*/library", "roles/*/filter_plugins",
                                                            "roles/*/module_utils") for p in REPO.glob(pattern))
    assert stray == []


def ansible_doc(kind: str, names: list[str]) -> dict:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    run = subprocess.run([str(ANSIBLE_DOC), "--json", "-t", kind, *names], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


@pytest.mark.skipif(not ANSIBLE_DOC.exists(), reason="ansible-doc not in this venv")
def test_every_module_documents_itself():
    docs = ansible_doc("module", [f"{FQCN}.{name}" for name in MODULES])
    assert sorted(docs) == [f"{FQCN}.{name}" for name in MODULES]
    for name, doc in docs.items():
        assert doc["doc"]["short_description"], name
        assert doc["examples"] and doc["return"] is not None, f"{name}: EXAMPLES and RETURN are required"


@pytest.mark.skipif(not ANSIBLE_DOC.exists(), reason="ansible-doc not in this venv")
def test_every_filter_documents_itself():
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"))
    listed = subprocess.run([str(ANSIBLE_DOC), "--json", "-l", "-t", "filter", FQCN], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    names = sorted(json.loads(listed.stdout))
    assert len(names) > 40, names
    docs = ansible_doc("filter", names)
    assert sorted(docs) == names


@pytest.mark.skipif(not ANSIBLE_GALAXY.exists(), reason="ansible-galaxy not in this venv")
def test_the_built_collection_serves_a_playbook_outside_the_repository(tmp_path):
    """What a fleet owner does: build, install, and use the roles and playbooks by FQCN from their own project."""
    env = dict(os.environ, ANSIBLE_CONFIG="/nonexistent", ANSIBLE_NOCOLOR="1")
    build = subprocess.run([str(ANSIBLE_GALAXY), "collection", "build", str(REPO), "--output-path", str(tmp_path)],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    tarball = next(tmp_path.glob("claude_vllm-fleet-*.tar.gz"))
    installed = tmp_path / "installed"
    install = subprocess.run([str(ANSIBLE_GALAXY), "collection", "install", "--no-deps", "-p", str(installed),
                              str(tarball)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stdout + install.stderr
    tree = installed / "ansible_collections/claude_vllm/fleet"
    assert (tree / "plugins/module_utils/fleet_contract.py").is_file() and not (tree / "molecule").exists()
    assert (tree / "roles/claude_code/files/claude-vllm-doctor").read_bytes() == (
        REPO / "tools/claude-vllm-doctor").read_bytes()
    # The collections it needs (community.docker, ansible.posix) from this checkout, not the repository's link.
    for namespace in ("community", "ansible"):
        (installed / "ansible_collections" / namespace).symlink_to(REPO / "collections/ansible_collections" / namespace)
    (tmp_path / "site.yml").write_text(
        "- ansible.builtin.import_playbook: claude_vllm.fleet.gpu_hosts\n"
        "- name: Workstations\n  hosts: workstations\n  roles: [claude_vllm.fleet.claude_code]\n")
    check = subprocess.run([str(ANSIBLE_PLAYBOOK), "--syntax-check", "-i", str(REPO / "inventory/default"), "site.yml"],
                           cwd=tmp_path, env=dict(env, ANSIBLE_COLLECTIONS_PATH=str(installed)),
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("tag, role", [("cuda", "nvidia_cuda"), ("vllm", "vllm"), ("gateway", "gateway"),
                                       ("workstation", "claude_code")])
def test_a_tag_runs_only_its_own_roles_preflight(tag, role):
    """site.yml --tags X must not run another role's preflight (an `always` task there once failed such runs)."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    listed = subprocess.run([str(ANSIBLE_PLAYBOOK), "site.yml", "--tags", tag, "--list-tasks"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stderr[-2000:]
    owners = {line.split()[0] for line in listed.stdout.splitlines() if "Preflight |" in line}
    assert owners == {f"{FQCN}.{role}"}, owners
