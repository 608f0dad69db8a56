"""nvidia_cuda role: package names per OS, source, branch and naming scheme; input checks; GPU detection."""

from __future__ import annotations

import pytest

from conftest import load_plugin

nv = load_plugin("plugins/filter/nvidia_packages.py", "nvidia_packages_filters")
gpu_info = load_plugin("plugins/modules/nvidia_gpu_info.py", "nvidia_gpu_info_module")

APT_OS = ["ubuntu2204", "ubuntu2404", "debian12", "debian13"]


# --- NVIDIA's CUDA repository on Debian/Ubuntu: branch in the names up to 580, pinning from 590 ---

@pytest.mark.parametrize("os_id", APT_OS)
@pytest.mark.parametrize("branch, modules, packages", [
    ("570", "open", ["nvidia-open-570"]),
    ("580", "open", ["nvidia-open-580"]),
    ("580", "proprietary", ["cuda-drivers-580"]),
    ("550", "proprietary", ["cuda-drivers-550"]),
])
def test_cuda_repo_apt_branch_in_name(os_id, branch, modules, packages):
    result = nv.nvidia_driver_packages(os_id, branch, "cuda_repo", modules)
    assert result == {"packages": packages, "pinning_packages": [], "module_stream": "", "scheme": "branch_in_name"}


@pytest.mark.parametrize("os_id", APT_OS)
@pytest.mark.parametrize("branch, modules, packages", [
    ("590", "open", ["nvidia-open"]),
    ("595", "open", ["nvidia-open"]),
    ("590", "proprietary", ["cuda-drivers"]),
    ("610", "proprietary", ["cuda-drivers"]),
])
def test_cuda_repo_apt_pinning_package_from_590(os_id, branch, modules, packages):
    result = nv.nvidia_driver_packages(os_id, branch, "cuda_repo", modules)
    assert result["scheme"] == "pinning"
    assert result["pinning_packages"] == [f"nvidia-driver-pinning-{branch}"]
    assert result["packages"] == packages
    assert result["module_stream"] == ""


def test_branch_given_as_int_is_accepted():
    assert nv.nvidia_driver_packages("ubuntu2404", 580)["packages"] == ["nvidia-open-580"]
    assert nv.nvidia_driver_packages("ubuntu2404", 590)["pinning_packages"] == ["nvidia-driver-pinning-590"]


@pytest.mark.parametrize("scheme, expected", [("pinning", "pinning"), ("branch_in_name", "branch_in_name")])
def test_scheme_can_be_forced(scheme, expected):
    result = nv.nvidia_driver_packages("debian12", "580", "cuda_repo", "open", scheme)
    assert result["scheme"] == expected
    if expected == "pinning":
        assert result == {"packages": ["nvidia-open"], "pinning_packages": ["nvidia-driver-pinning-580"],
                          "module_stream": "", "scheme": "pinning"}
    forced_old = nv.nvidia_driver_packages("debian12", "590", "cuda_repo", "proprietary", "branch_in_name")
    assert forced_old["packages"] == ["cuda-drivers-590"] and forced_old["pinning_packages"] == []


# --- RHEL 9: the DNF module stream pins the branch, for every branch ---

@pytest.mark.parametrize("branch", ["570", "580", "590"])
@pytest.mark.parametrize("modules, stream, packages", [
    ("open", "open", ["nvidia-open"]),
    ("proprietary", "dkms", ["cuda-drivers"]),
])
def test_rhel9_module_stream(branch, modules, stream, packages):
    result = nv.nvidia_driver_packages("rhel9", branch, "cuda_repo", modules)
    assert result == {"packages": packages, "pinning_packages": [],
                      "module_stream": f"nvidia-driver:{branch}-{stream}", "scheme": "module_stream"}


# --- The distributions' own packages ---

@pytest.mark.parametrize("os_id, branch", [("debian12", "535"), ("debian13", "550")])
@pytest.mark.parametrize("modules, kernel_package", [("open", "nvidia-open-kernel-dkms"),
                                                     ("proprietary", "nvidia-kernel-dkms")])
def test_debian_distro_packages(os_id, branch, modules, kernel_package):
    result = nv.nvidia_driver_packages(os_id, branch, "distro", modules)
    assert result["scheme"] == "distro"
    assert result["pinning_packages"] == [] and result["module_stream"] == ""
    assert result["packages"] == [kernel_package, "firmware-nvidia-gsp", "nvidia-smi", "nvidia-persistenced",
                                  "nvidia-modprobe", "libcuda1"]


@pytest.mark.parametrize("os_id", ["ubuntu2204", "ubuntu2404"])
@pytest.mark.parametrize("branch", ["535", "580", "590"])
def test_ubuntu_distro_server_packages_keep_the_branch(os_id, branch):
    assert nv.nvidia_driver_packages(os_id, branch, "distro", "open")["packages"] == [
        f"nvidia-headless-{branch}-server-open", f"nvidia-utils-{branch}-server"]
    assert nv.nvidia_driver_packages(os_id, branch, "distro", "proprietary")["packages"] == [
        f"nvidia-headless-{branch}-server", f"nvidia-utils-{branch}-server"]


def test_rhel_has_no_distro_driver():
    with pytest.raises(ValueError):
        nv.nvidia_driver_packages("rhel9", "580", "distro", "open")


def test_unknown_os_is_an_error():
    with pytest.raises(ValueError):
        nv.nvidia_driver_packages("ubuntu2004", "580")


# --- Toolkit and versions ---

@pytest.mark.parametrize("version, package, home", [
    ("12.8", "cuda-toolkit-12-8", "/usr/local/cuda-12.8"),
    ("12.10", "cuda-toolkit-12-10", "/usr/local/cuda-12.10"),
    ("13.0", "cuda-toolkit-13-0", "/usr/local/cuda-13.0"),
])
def test_toolkit_package_and_home(version, package, home):
    assert nv.nvidia_toolkit_package(version) == package
    assert nv.nvidia_toolkit_home(version) == home


@pytest.mark.parametrize("version, branch", [("580.95.05", "580"), ("535.261.03", "535"), ("590", "590"),
                                             ("", ""), (None, ""), ("garbage", "")])
def test_branch_of(version, branch):
    assert nv.nvidia_branch_of(version) == branch


# --- Input checks: each names the variable, the problem and the fix ---

GOOD = {
    "os_id": "ubuntu2404", "os_name": "Ubuntu 24.04", "architecture": "x86_64",
    "driver_source": "cuda_repo", "driver_branch": "580", "driver_kernel_modules": "open",
    "driver_package_scheme": "auto", "reboot": "auto", "cuda_toolkit_install": False,
    "cuda_toolkit_version": "12.8", "cuda_repo_key_content": "",
}


def problems(**changes):
    return nv.nvidia_cuda_problems(dict(GOOD, **changes))


@pytest.mark.parametrize("changes", [
    {},
    {"os_id": "debian12", "driver_source": "distro", "driver_branch": "535", "driver_kernel_modules": "proprietary"},
    {"os_id": "debian13", "driver_source": "distro", "driver_branch": "550"},
    {"os_id": "debian13", "driver_source": "distro", "driver_branch": "550", "driver_kernel_modules": "proprietary"},
    {"os_id": "ubuntu2204", "driver_source": "distro", "driver_branch": "570"},
    {"os_id": "rhel9", "driver_branch": "590"},
    {"driver_branch": 580},
    {"cuda_toolkit_install": True, "cuda_toolkit_version": "12.10"},
    {"architecture": "aarch64"},
    {"cuda_repo_key_content": "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nabc\n-----END PGP PUBLIC KEY BLOCK-----"},
    {"driver_branch": "470", "driver_kernel_modules": "proprietary"},
])
def test_good_input_passes(changes):
    assert problems(**changes) == []


@pytest.mark.parametrize("changes, fragments", [
    ({"os_id": "", "os_name": "Ubuntu 20.04"},
     ["'Ubuntu 20.04' is not supported", "Ubuntu 22.04, Ubuntu 24.04, Debian 12, Debian 13, RHEL 9", "Fix:"]),
    ({"driver_source": "runfile"}, ["nvidia_driver_source ('runfile') is not one of cuda_repo, distro", "Fix:"]),
    ({"driver_kernel_modules": "nouveau"}, ["nvidia_driver_kernel_modules ('nouveau')", "open, proprietary"]),
    ({"driver_package_scheme": "latest"}, ["nvidia_driver_package_scheme ('latest')"]),
    ({"reboot": "always"}, ["nvidia_reboot ('always') is not one of auto, never"]),
    ({"driver_branch": "580.95.05"}, ["nvidia_driver_branch ('580.95.05') is not a driver branch", 'Fix: set it like']),
    ({"driver_branch": "58x"}, ["nvidia_driver_branch ('58x')"]),
    ({"driver_branch": True}, ["nvidia_driver_branch (True)"]),
    ({"driver_branch": ""}, ["nvidia_driver_branch ('')"]),
    ({"cuda_toolkit_install": True, "cuda_toolkit_version": 12.1},
     ["nvidia_cuda_toolkit_version (12.1) was read as a number", 'Fix: quote it']),
    ({"cuda_toolkit_install": True, "cuda_toolkit_version": "12.8.1"}, ["nvidia_cuda_toolkit_version ('12.8.1') must be MAJOR.MINOR"]),
    ({"cuda_toolkit_install": True, "cuda_toolkit_version": "cuda-12.8"}, ["nvidia_cuda_toolkit_version ('cuda-12.8')"]),
    ({"os_id": "rhel9", "driver_source": "distro"}, ["no NVIDIA driver in its own repositories", "nvidia_driver_source: cuda_repo"]),
    ({"os_id": "debian12", "driver_source": "distro"},
     ["nvidia_driver_branch (580): Debian 12's own archive ships only branch 535", 'nvidia_driver_branch: "535"']),
    ({"os_id": "debian13", "driver_source": "distro", "driver_branch": "550", "cuda_toolkit_install": True},
     ["nvidia_cuda_toolkit_install needs NVIDIA's CUDA repository", "Fix:"]),
    ({"os_id": "debian12", "driver_source": "distro", "driver_branch": "535"},
     ["nvidia_driver_kernel_modules (open): Debian 12's open kernel module package", "security updates",
      "nvidia_driver_kernel_modules: proprietary"]),
    ({"driver_branch": "470"}, ["branch 470 has no open kernel modules", "nvidia_driver_kernel_modules: proprietary"]),
    ({"architecture": "ppc64le"}, ["architecture 'ppc64le' has no NVIDIA CUDA repository"]),
    ({"os_id": "rhel9", "driver_package_scheme": "pinning"}, ["RHEL pins the branch with a DNF module stream"]),
    ({"cuda_repo_key_content": "not a key"}, ["nvidia_cuda_repo_key_content is set but is not an ASCII-armored"]),
])
def test_bad_input_is_refused_with_variable_problem_and_fix(changes, fragments):
    found = problems(**changes)
    assert len(found) >= 1, changes
    text = " ".join(found)
    for fragment in fragments:
        assert fragment in text
    assert all("Fix:" in message for message in found)


def test_toolkit_version_is_only_checked_when_the_toolkit_is_wanted():
    assert problems(cuda_toolkit_version="nonsense") == []


# --- GPU detection (the role's read-only module) ---

def make_device(root, address, vendor, pci_class, device):
    path = root / address
    path.mkdir(parents=True)
    (path / "vendor").write_text(vendor + "\n")
    (path / "class").write_text(pci_class + "\n")
    (path / "device").write_text(device + "\n")


def test_scan_pci_counts_nvidia_display_controllers_only(tmp_path):
    make_device(tmp_path, "0000:00:02.0", "0x8086", "0x030000", "0x3e92")     # Intel iGPU
    make_device(tmp_path, "0000:17:00.0", "0x10de", "0x030200", "0x2330")     # H100 (3D controller)
    make_device(tmp_path, "0000:65:00.0", "0x10de", "0x030000", "0x2684")     # RTX 4090 (VGA)
    make_device(tmp_path, "0000:65:00.1", "0x10de", "0x040300", "0x22ba")     # its HDMI audio
    make_device(tmp_path, "0000:b3:00.0", "0x10de", "0x068000", "0x22a3")     # NVSwitch bridge
    make_device(tmp_path, "0000:d8:00.0", "0x10de", "0x030200", "0x1db4")     # V100 (Volta)
    gpus = gpu_info.scan_pci(str(tmp_path))
    assert [gpu["address"] for gpu in gpus] == ["0000:17:00.0", "0000:65:00.0", "0000:d8:00.0"]
    assert [gpu["pre_turing"] for gpu in gpus] == [False, False, True]


def test_scan_pci_without_sysfs(tmp_path):
    assert gpu_info.scan_pci(str(tmp_path / "missing")) == []


def test_parse_nvidia_smi():
    out = ("0, NVIDIA H100 80GB HBM3, 00000000:17:00.0, 580.95.05\n"
           "1, NVIDIA H100 80GB HBM3, 00000000:2A:00.0, 580.95.05\n")
    gpus = gpu_info.parse_nvidia_smi(out)
    assert [gpu["bus_id"] for gpu in gpus] == ["00000000:17:00.0", "00000000:2A:00.0"]
    assert gpus[0]["driver_version"] == "580.95.05" and gpus[0]["name"] == "NVIDIA H100 80GB HBM3"
    assert gpu_info.branch_of(gpus[0]["driver_version"]) == "580"
    assert gpu_info.parse_nvidia_smi("NVIDIA-SMI has failed because it couldn't communicate with the driver.") == []


@pytest.mark.parametrize("text, expected", [
    ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build  (dvs-builder@U16)",
     {"loaded": True, "version": "580.95.05", "flavor": "open"}),
    ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.261.03  Wed Jun 11 2025",
     {"loaded": True, "version": "535.261.03", "flavor": "proprietary"}),
])
def test_kernel_module_info(tmp_path, text, expected):
    version_file = tmp_path / "version"
    version_file.write_text(text + "\nGCC version:  gcc version 12.2.0\n")
    assert gpu_info.kernel_module_info(str(version_file)) == expected
    assert gpu_info.kernel_module_info(str(tmp_path / "none"))["loaded"] is False
