"""Shared pytest helpers: paths, and loading the project's Ansible plugins as plain modules."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The plugins import each other the collection way (ansible_collections.claude_vllm.fleet...): the committed
# link collections/ansible_collections/claude_vllm/fleet makes that name this repository.
if str(REPO / "collections") not in sys.path:
    sys.path.insert(0, str(REPO / "collections"))


def load_plugin(relative_path: str, name: str):
    """Import a plugin file (plugins/...) as a module."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / relative_path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


def make_searchable(path: Path) -> None:
    """Let other users reach files under `path` (pytest's base directory is 0700), as /home is searchable."""
    for directory in [path, *path.parents]:
        if directory == Path("/tmp"):
            break
        directory.chmod(0o711)
