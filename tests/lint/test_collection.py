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
