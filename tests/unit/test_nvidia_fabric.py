"""NVSwitch boards: nvidia-smi -q parsing, NVSwitch/MIG/missing-GPU detection from recorded sysfs trees, the
Fabric Manager package choice and the fabric wait (nvidia_fabric_ready) against recorded nvidia-smi -q outputs.

The fixtures are in tests/fixtures/nvidia/ (its README says where each format comes from). No GPU here: where a
module runs a command, the command is a stand-in script named fake-* that prints a fixture.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from conftest import REPO, load_plugin, run_module

nvutil = load_plugin("plugins/module_utils/nvidia.py", "nvidia_module_utils")
nv = load_plugin("plugins/filter/nvidia_packages.py", "nvidia_packages_filters")
gpu_info = load_plugin("plugins/modules/nvidia_gpu_info.py", "nvidia_gpu_info_module")
fabric_ready = load_plugin("plugins/modules/nvidia_fabric_ready.py", "nvidia_fabric_ready_module")

FIXTURES = REPO / "tests" / "fixtures" / "nvidia"
SMI = FIXTURES / "smi"
HGX_BUS_IDS = ["0000:18:00.0", "0000:2a:00.0", "0000:3a:00.0", "0000:5d:00.0",
               "0000:9a:00.0", "0000:ab:00.0", "0000:ba:00.0", "0000:db:00.0"]


def smi_q(name):
    return (SMI / name).read_text()


def materialize_sysfs(description: str, root: Path) -> Path:
    """A sysfs PCI devices directory from tests/fixtures/nvidia/sysfs/<description>.json: one directory per
    function with vendor, device and class files, and a 'driver' link named after the bound driver."""
    devices = json.loads((FIXTURES / "sysfs" / f"{description}.json").read_text())
    for address, entry in devices.items():
        base = root / address
        base.mkdir(parents=True)
        for key in ("vendor", "device", "class"):
            (base / key).write_text(entry[key] + "\n")
        if entry.get("driver"):
            os.symlink(f"../../../bus/pci/drivers/{entry['driver']}", base / "driver")
    return root


# --- normalize_bus_id --------------------------------------------------------------------------

@pytest.mark.parametrize("given, expected", [
    ("00000000:18:00.0", "0000:18:00.0"),     # nvidia-smi
    ("0000:18:00.0", "0000:18:00.0"),         # sysfs
    ("00000000:DB:00.0", "0000:db:00.0"),     # nvidia-smi --query-gpu prints upper case
    ("18:00.0", "0000:18:00.0"),
    ("GPU 0", ""),
    (None, ""),
])
def test_normalize_bus_id(given, expected):
    assert nvutil.normalize_bus_id(given) == expected


# --- parse_nvidia_smi_q on recorded outputs ------------------------------------------------------

def test_hgx_h100_completed():
    gpus = nvutil.parse_nvidia_smi_q(smi_q("hgx_h100_580_fabric_completed.txt"))
    assert [gpu["bus_id"] for gpu in gpus] == HGX_BUS_IDS
    first = gpus[0]
    assert first["product"] == "NVIDIA H100 80GB HBM3"
    assert first["driver_version"] == "580.95.05"
    assert (first["mig_current"], first["mig_pending"]) == ("Disabled", "Disabled")
    assert (first["fabric_state"], first["fabric_status"], first["fabric_clique_id"]) == ("Completed", "Success", "32766")
    assert {nvutil.fabric_verdict(gpu) for gpu in gpus} == {"ready"}


def test_hgx_h100_535_fabric_section_without_clique():
    gpus = nvutil.parse_nvidia_smi_q(smi_q("hgx_h100_535_fabric_completed.txt"))
    assert len(gpus) == 8 and gpus[0]["driver_version"] == "535.230.02"
    assert all(gpu["fabric_state"] == "Completed" and gpu["fabric_clique_id"] == "" for gpu in gpus)


@pytest.mark.parametrize("fixture, verdict, state", [
    ("hgx_h200_580_fabric_in_progress.txt", "waiting", "In Progress"),
    ("hgx_h200_580_fabric_not_started.txt", "waiting", "Not Started"),
    ("pcie_l40s_580_fabric_na.txt", "not_reported", "N/A"),
    ("pcie_t4_470_no_fabric_section.txt", "not_reported", ""),
])
def test_fabric_verdicts(fixture, verdict, state):
    gpus = nvutil.parse_nvidia_smi_q(smi_q(fixture))
    assert gpus
    assert {gpu["fabric_state"] for gpu in gpus} == {state}
    assert {nvutil.fabric_verdict(gpu) for gpu in gpus} == {verdict}


def test_fabric_failed_on_two_gpus():
    gpus = nvutil.parse_nvidia_smi_q(smi_q("hgx_h100_580_fabric_failed.txt"))
    failed = [gpu["bus_id"] for gpu in gpus if nvutil.fabric_verdict(gpu) == "failed"]
    assert failed == ["0000:5d:00.0", "0000:db:00.0"]
    assert gpus[3]["fabric_status"] == "Insufficient Resources"


def test_mig_modes():
    gpus = nvutil.parse_nvidia_smi_q(smi_q("hgx_h100_580_mig.txt"))
    assert [(g["mig_current"], g["mig_pending"]) for g in gpus[:3]] == [
        ("Enabled", "Enabled"), ("Disabled", "Enabled"), ("Disabled", "Disabled")]
    t4 = nvutil.parse_nvidia_smi_q(smi_q("pcie_t4_470_no_fabric_section.txt"))
    assert (t4[0]["mig_current"], t4[0]["driver_version"]) == ("N/A", "470.256.02")


def test_unknown_state_keeps_waiting_and_garbage_yields_nothing():
    assert nvutil.fabric_verdict({"fabric_state": "Degraded Something", "fabric_status": ""}) == "waiting"
    assert nvutil.parse_nvidia_smi_q("NVIDIA-SMI has failed because it couldn't communicate with the driver.") == []
    assert nvutil.parse_nvidia_smi_q("") == []


# --- nvidia_gpu_info on recorded sysfs trees ----------------------------------------------------

def test_hgx_sysfs_gpus_and_nvswitches(tmp_path):
    gpus, switches = gpu_info.scan_pci_devices(str(materialize_sysfs("hgx_h100", tmp_path)))
    assert [gpu["address"] for gpu in gpus] == HGX_BUS_IDS
    assert {gpu["driver"] for gpu in gpus} == {"nvidia"}
    assert [s["address"] for s in switches] == ["0000:05:00.0", "0000:06:00.0", "0000:07:00.0", "0000:08:00.0"]
    assert {(s["device"], s["driver"]) for s in switches} == {("0x22a3", "nvidia-nvswitch")}


def test_pcie_sysfs_has_no_nvswitch(tmp_path):
    gpus, switches = gpu_info.scan_pci_devices(str(materialize_sysfs("pcie_l40s_one_vfio", tmp_path)))
    assert switches == []
    assert [(gpu["address"], gpu["driver"]) for gpu in gpus] == [("0000:41:00.0", "nvidia"), ("0000:c1:00.0", "vfio-pci")]


def smi_result(bus_ids):
    return {"ok": True, "gpus": [{"bus_id": "0000" + b} for b in bus_ids]}


def test_missing_from_driver_unbound_and_unlisted(tmp_path):
    gpus = gpu_info.scan_pci(str(materialize_sysfs("hgx_h100_gpu_unbound", tmp_path)))
    listed = ["0000:18:00.0", "0000:2a:00.0", "0000:3a:00.0", "0000:5d:00.0", "0000:9a:00.0", "0000:ab:00.0"]
    missing = gpu_info.missing_from_driver(gpus, smi_result(listed))
    assert missing == [
        {"address": "0000:ba:00.0", "driver": "nvidia", "reason": "bound to nvidia but not listed by nvidia-smi"},
        {"address": "0000:db:00.0", "driver": "", "reason": "no kernel driver bound in sysfs"},
    ]
    assert gpu_info.missing_from_driver(
        gpu_info.scan_pci(str(materialize_sysfs("hgx_h100", tmp_path / "all"))), smi_result(HGX_BUS_IDS)) == []


def test_missing_from_driver_other_driver(tmp_path):
    gpus = gpu_info.scan_pci(str(materialize_sysfs("pcie_l40s_one_vfio", tmp_path)))
    missing = gpu_info.missing_from_driver(gpus, smi_result(["0000:41:00.0"]))
    assert missing == [{"address": "0000:c1:00.0", "driver": "vfio-pci",
                        "reason": "kernel driver vfio-pci bound instead of nvidia"}]


def fake_nvidia_smi(bindir: Path, q_fixtures, csv_lines):
    """A stand-in nvidia-smi (no GPU here): --query-gpu prints csv_lines; each -q call prints the next of
    q_fixtures (the last one again once they run out). Also stand-in systemctl/journalctl for the service."""
    bindir.mkdir(parents=True, exist_ok=True)
    (bindir / "q_list").write_text("\n".join(str(SMI / name) for name in q_fixtures) + "\n")
    (bindir / "csv").write_text("".join(line + "\n" for line in csv_lines))
    script = f"""#!/bin/sh
# fake-nvidia-smi: a test stand-in printing recorded outputs (tests/fixtures/nvidia/smi)
case "$1" in
  -q) n=$(cat {bindir}/q_count 2>/dev/null || echo 0); echo $((n + 1)) > {bindir}/q_count
      total=$(wc -l < {bindir}/q_list); i=$((n + 1)); [ $i -gt $total ] && i=$total
      cat "$(sed -n ${{i}}p {bindir}/q_list)";;
  *) cat {bindir}/csv;;
esac
"""
    write_exec(bindir / "nvidia-smi", script)


def write_exec(path, text):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def fake_service(bindir: Path, state: str, journal_lines):
    write_exec(bindir / "systemctl", f"#!/bin/sh\n# fake-systemctl: test stand-in\necho {state}\n"
                                     f"[ {state} = active ] && exit 0 || exit 3\n")
    (bindir / "journal").write_text("".join(line + "\n" for line in journal_lines))
    write_exec(bindir / "journalctl", f"#!/bin/sh\n# fake-journalctl: test stand-in\ncat {bindir}/journal\n")


HGX_CSV = [f"{i}, NVIDIA H100 80GB HBM3, 0000{b.upper()}, 580.95.05" for i, b in enumerate(HGX_BUS_IDS)]


@pytest.fixture
def on_path(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    if Path("/usr/bin/nvidia-smi").exists():
        pytest.skip("a real nvidia-smi in /usr/bin would be found before the stand-in")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return bindir


def test_gpu_info_module_on_hgx(on_path, tmp_path, monkeypatch):
    fake_nvidia_smi(on_path, ["hgx_h100_580_mig.txt"], HGX_CSV)
    sysfs = materialize_sysfs("hgx_h100", tmp_path / "sysfs")
    result = run_module(monkeypatch, gpu_info.main, {"sysfs_pci_path": str(sysfs)}, check_mode=True).result
    assert result["gpu_count"] == 8 and len(result["nvswitches"]) == 4
    assert result["fabric_manager_needed"] is True
    assert result["nvidia_smi"]["ok"] and result["nvidia_smi"]["branch"] == "580"
    assert result["mig_enabled"] == ["0000:18:00.0", "0000:2a:00.0"]
    assert result["nvidia_smi"]["gpus"][0]["fabric_state"] == "Completed"
    assert result["gpus_missing_from_driver"] == []
    assert result["changed"] is False


def test_gpu_info_module_pcie_without_nvswitch(on_path, tmp_path, monkeypatch):
    fake_nvidia_smi(on_path, ["pcie_l40s_580_fabric_na.txt"],
                    ["0, NVIDIA L40S, 00000000:41:00.0, 580.95.05", "1, NVIDIA L40S, 00000000:C1:00.0, 580.95.05"])
    sysfs = materialize_sysfs("pcie_l40s_one_vfio", tmp_path / "sysfs")
    result = run_module(monkeypatch, gpu_info.main, {"sysfs_pci_path": str(sysfs)}).result
    assert result["nvswitches"] == [] and result["fabric_manager_needed"] is False
    assert result["mig_enabled"] == []
    assert [m["address"] for m in result["gpus_missing_from_driver"]] == ["0000:c1:00.0"]


def test_gpu_info_fabric_state_alone_means_fabric_manager(on_path, tmp_path, monkeypatch):
    """An NVSwitch board whose switches are not on the PCI bus (HGX B200-like): the driver's fabric state tells."""
    fake_nvidia_smi(on_path, ["hgx_h200_580_fabric_in_progress.txt"], HGX_CSV)
    sysfs = materialize_sysfs("pcie_l40s_one_vfio", tmp_path / "sysfs")  # no NVSwitch in sysfs
    result = run_module(monkeypatch, gpu_info.main, {"sysfs_pci_path": str(sysfs)}).result
    assert result["nvswitches"] == [] and result["fabric_manager_needed"] is True


# --- nvidia_fabric_ready -------------------------------------------------------------------------

READY_ARGS = {"timeout": 30, "interval": 1, "log_lines": 5}


def test_fabric_ready_after_in_progress(on_path, monkeypatch, tmp_path):
    fake_nvidia_smi(on_path, ["hgx_h200_580_fabric_not_started.txt", "hgx_h200_580_fabric_in_progress.txt",
                              "hgx_h100_580_fabric_completed.txt"], HGX_CSV)
    fake_service(on_path, "active", ["Started NVIDIA fabric manager service."])
    outcome = run_module(monkeypatch, fabric_ready.main, dict(READY_ARGS, log_file=str(tmp_path / "none")),
                         check_mode=True)
    assert not outcome.failed, outcome.result
    assert outcome.result["ready"] is True and outcome.result["changed"] is False
    assert (on_path / "q_count").read_text().strip() == "3"
    assert {gpu["verdict"] for gpu in outcome.result["gpus"]} == {"ready"}


def test_fabric_stuck_in_progress_times_out_with_the_journal(on_path, monkeypatch, tmp_path):
    fake_nvidia_smi(on_path, ["hgx_h200_580_fabric_in_progress.txt"], HGX_CSV)
    journal = [f"fake line {i}" for i in range(8)] + ["request to query NVSwitch device information failed"]
    fake_service(on_path, "active", journal)
    log = tmp_path / "fabricmanager.log"
    log.write_text("[ERR] first\n[ERR] NVLink training did not complete\n")
    outcome = run_module(monkeypatch, fabric_ready.main,
                         dict(READY_ARGS, timeout=2, log_file=str(log)))
    assert outcome.failed
    msg = outcome.result["msg"]
    assert "0000:18:00.0 (state In Progress, status N/A)" in msg
    assert "request to query NVSwitch device information failed" in msg
    assert "fake line 3" not in msg, "only the last log_lines lines"
    assert "[ERR] NVLink training did not complete" in msg
    assert outcome.result["waited"] >= 2


def test_fabric_failed_status_fails_at_once(on_path, monkeypatch, tmp_path):
    fake_nvidia_smi(on_path, ["hgx_h100_580_fabric_failed.txt"], HGX_CSV)
    fake_service(on_path, "active", ["fabric manager: NVLink training error"])
    outcome = run_module(monkeypatch, fabric_ready.main, dict(READY_ARGS, log_file=str(tmp_path / "none")))
    assert outcome.failed and outcome.result["waited"] < 5
    assert "0000:5d:00.0 (state Completed, status Insufficient Resources)" in outcome.result["msg"]
    assert "0000:18:00.0" not in outcome.result["msg"].split("journalctl")[0]


def test_fabric_service_failed_fails_even_when_not_reported(on_path, monkeypatch, tmp_path):
    fake_nvidia_smi(on_path, ["pcie_l40s_580_fabric_na.txt"], HGX_CSV)
    fake_service(on_path, "failed", ["nv-fabricmanager: driver version mismatch"])
    outcome = run_module(monkeypatch, fabric_ready.main, dict(READY_ARGS, log_file=str(tmp_path / "none")))
    assert outcome.failed and "the service failed" in outcome.result["msg"]
    assert "driver version mismatch" in outcome.result["msg"]


def test_fabric_not_reported_with_active_service_is_ready(on_path, monkeypatch, tmp_path):
    """A100 boards print Fabric State N/A even with Fabric Manager running: the active service is what counts."""
    fake_nvidia_smi(on_path, ["pcie_l40s_580_fabric_na.txt"], HGX_CSV)
    fake_service(on_path, "active", [])
    outcome = run_module(monkeypatch, fabric_ready.main, dict(READY_ARGS, log_file=str(tmp_path / "none")))
    assert not outcome.failed and outcome.result["service_state"] == "active"


# --- The Fabric Manager package for each source and scheme ---------------------------------------

@pytest.mark.parametrize("os_id, branch, source, expected", [
    # NVIDIA's apt repository: the branch in the name up to 580 (github.com/NVIDIA/apt-packaging-fabric-manager) ...
    ("ubuntu2404", "580", "cuda_repo", ["nvidia-fabricmanager-580"]),
    ("debian12", "570", "cuda_repo", ["nvidia-fabricmanager-570"]),
    ("ubuntu2204", "535", "cuda_repo", ["nvidia-fabricmanager-535"]),
    # ... branch-less from 590, held by nvidia-driver-pinning-<branch> (NVIDIA driver installation guide)
    ("ubuntu2404", "590", "cuda_repo", ["nvidia-fabricmanager"]),
    ("debian13", "595", "cuda_repo", ["nvidia-fabricmanager"]),
    # RHEL: the module stream holds the version
    ("rhel9", "580", "cuda_repo", ["nvidia-fabric-manager"]),
    ("rhel9", "590", "cuda_repo", ["nvidia-fabric-manager"]),
    # Ubuntu's archive: nvidia-fabricmanager-<branch> for every branch (packages.ubuntu.com, fabric-manager-<branch>)
    ("ubuntu2404", "580", "distro", ["nvidia-fabricmanager-580"]),
    ("ubuntu2204", "595", "distro", ["nvidia-fabricmanager-595"]),
    # Debian's archive has none
    ("debian12", "535", "distro", []),
    ("debian13", "550", "distro", []),
])
def test_fabricmanager_packages(os_id, branch, source, expected):
    assert nv.nvidia_fabricmanager_packages(os_id, branch, source) == expected


def test_fabricmanager_package_follows_a_forced_scheme():
    assert nv.nvidia_fabricmanager_packages("debian12", "580", "cuda_repo", "pinning") == ["nvidia-fabricmanager"]
    assert nv.nvidia_fabricmanager_packages("debian12", "590", "cuda_repo", "branch_in_name") == ["nvidia-fabricmanager-590"]


@pytest.mark.parametrize("os_id, branch, source, expected", [
    ("ubuntu2404", "580", "cuda_repo", ["nvidia-fabricmanager-580=580.95.05-*"]),
    ("debian12", "590", "cuda_repo", ["nvidia-fabricmanager=590.48.01-*"]),
    ("ubuntu2404", "580", "distro", ["nvidia-fabricmanager-580=580.95.05-*"]),
    ("rhel9", "580", "cuda_repo", ["nvidia-fabric-manager-580.95.05"]),
])
def test_fabricmanager_package_held_to_the_running_driver(os_id, branch, source, expected):
    version = {"580": "580.95.05", "590": "590.48.01"}[branch]
    assert nv.nvidia_fabricmanager_packages(os_id, branch, source, "auto", version) == expected


def test_fabricmanager_package_refuses_another_branch():
    with pytest.raises(ValueError, match="not of branch 580"):
        nv.nvidia_fabricmanager_packages("ubuntu2404", "580", "cuda_repo", "auto", "575.57.08")


# --- Input checks -------------------------------------------------------------------------------

BASE = {"os_id": "debian12", "os_name": "Debian 12", "architecture": "x86_64", "driver_source": "cuda_repo",
        "driver_branch": "580", "driver_kernel_modules": "open", "driver_package_scheme": "auto", "reboot": "auto",
        "cuda_toolkit_install": False, "cuda_toolkit_version": "12.8", "cuda_repo_key_content": "",
        "fabricmanager_manage": "auto", "fabricmanager_ready_timeout": 300}


def test_fabricmanager_settings_accepted():
    assert nv.nvidia_cuda_problems(BASE) == []
    assert nv.nvidia_cuda_problems(dict(BASE, fabricmanager_manage="true")) == []


@pytest.mark.parametrize("change, fragments", [
    ({"fabricmanager_manage": "yes"}, ["nvidia_fabricmanager_manage ('yes') is not one of auto, true, false", "Fix:"]),
    ({"fabricmanager_ready_timeout": 0}, ["nvidia_fabricmanager_ready_timeout (0)", "Fix:"]),
    ({"driver_source": "distro", "driver_branch": "535", "driver_kernel_modules": "proprietary",
      "fabricmanager_manage": "true"},
     ["nvidia_fabricmanager_manage (true)", "no NVIDIA Fabric Manager", "Fix: set nvidia_driver_source: cuda_repo"]),
])
def test_fabricmanager_settings_refused(change, fragments):
    problems = nv.nvidia_cuda_problems(dict(BASE, **change))
    assert len(problems) == 1, problems
    for fragment in fragments:
        assert fragment in problems[0]
