# -*- coding: utf-8 -*-
"""Package selection and input validation for the nvidia_cuda role.

Which packages install an NVIDIA driver branch depends on the OS, the package source (NVIDIA's
CUDA repository or the distribution's archive), the kernel-module flavour and, in NVIDIA's apt
repository, on the branch itself: up to 580 the branch is part of the package names
(``nvidia-open-580``, ``cuda-drivers-580``); from 590 on the names carry no branch and a separate
pinning package (``nvidia-driver-pinning-590``) locks apt onto the branch. On RHEL 9 the branch
is a DNF module stream (``nvidia-driver:580-open``). That logic lives here, unit-tested, rather
than in Jinja.
"""

from __future__ import annotations

import re

from ansible_collections.claude_vllm.fleet.plugins.module_utils.nvidia import branch_of

DOCUMENTATION = r"""
name: nvidia_packages
short_description: NVIDIA driver/CUDA package names per OS, source and branch, and input checks
description:
  - C(nvidia_driver_packages(os_id, branch, source, kernel_modules, scheme)) returns a dict with
    C(packages) (driver packages), C(pinning_packages) (installed first, apt only),
    C(module_stream) (DNF module stream to enable, RHEL only, else empty) and C(scheme) (the
    naming scheme used - C(branch_in_name), C(pinning), C(module_stream) or C(distro)).
  - C(nvidia_package_scheme(branch, os_id, source, scheme)) resolves C(auto) to the scheme used.
  - C(nvidia_fabricmanager_packages(os_id, branch, source, scheme)) returns the NVIDIA Fabric Manager
    package(s) that match the driver branch from the driver's own source (an empty list where that
    source has none, Debian's archive).
  - C(nvidia_toolkit_package(version)) returns the CUDA toolkit package for C(12.8),
    i.e. C(cuda-toolkit-12-8); C(nvidia_toolkit_home(version)) its prefix C(/usr/local/cuda-12.8).
  - C(nvidia_branch_of(driver_version)) returns the branch of a driver version (C(580.95.05) -> C(580)).
  - C(nvidia_cuda_problems(settings)) returns a list of error messages for bad input (empty when
    all is well); each names the variable, the problem and the fix.
  - C(nvidia_supported_os_labels) returns the human-readable list of supported systems.
options:
  os_id:
    description: One of C(debian12), C(debian13), C(ubuntu2204), C(ubuntu2404), C(rhel9).
    type: str
  branch:
    description: Driver branch, three digits such as C(580).
    type: str
  source:
    description: C(cuda_repo) or C(distro).
    type: str
  kernel_modules:
    description: C(open) or C(proprietary).
    type: str
  scheme:
    description: C(auto), C(branch_in_name) or C(pinning) (apt and C(cuda_repo) only).
    type: str
"""

# Branches from which NVIDIA's apt repository drops the branch from package names.
PINNING_FROM_BRANCH = 590
# Open GPU kernel modules exist from branch 515 on.
OPEN_MODULES_FROM_BRANCH = 515

SOURCES = ("cuda_repo", "distro")
KERNEL_MODULES = ("open", "proprietary")
SCHEMES = ("auto", "branch_in_name", "pinning")
REBOOT_MODES = ("auto", "never")
# nvidia_fabricmanager_manage as the role passes it here (| string | lower of auto, true or false).
FABRICMANAGER_MODES = ("auto", "true", "false")

# Everything the role supports. distro_branches: the branches the distribution's own archive ships
# (None: any branch, one package set per branch as Ubuntu does; empty: no driver in the archive).
SUPPORTED_OS = {
    "ubuntu2204": {"label": "Ubuntu 22.04", "manager": "apt", "distro_branches": None},
    "ubuntu2404": {"label": "Ubuntu 24.04", "manager": "apt", "distro_branches": None},
    # Debian 12's open kernel module package (nvidia-open-kernel-dkms) was not rebuilt for the
    # driver's security updates: with bookworm-security enabled apt finds no consistent set.
    "debian12": {"label": "Debian 12", "manager": "apt", "distro_branches": ("535",), "distro_open": False},
    "debian13": {"label": "Debian 13", "manager": "apt", "distro_branches": ("550",)},
    "rhel9": {"label": "RHEL 9 (and Rocky/AlmaLinux 9)", "manager": "dnf", "distro_branches": ()},
}

# Debian's own archive (contrib + non-free + non-free-firmware): a compute driver without X.
DEBIAN_DISTRO_COMMON = ["firmware-nvidia-gsp", "nvidia-smi", "nvidia-persistenced", "nvidia-modprobe", "libcuda1"]
DEBIAN_DISTRO_MODULES = {"open": "nvidia-open-kernel-dkms", "proprietary": "nvidia-kernel-dkms"}


def _branch_str(branch):
    return str(branch).strip()


def _os(os_id):
    if os_id not in SUPPORTED_OS:
        raise ValueError(f"unsupported os_id {os_id!r}; supported: {', '.join(SUPPORTED_OS)}")
    return SUPPORTED_OS[os_id]


def nvidia_supported_os_labels(_unused=None):
    return [entry["label"] for entry in SUPPORTED_OS.values()]


def nvidia_branch_of(driver_version):
    """'580.95.05' -> '580'; '' when there is no version."""
    return branch_of(driver_version)


def nvidia_package_scheme(branch, os_id, source="cuda_repo", scheme="auto"):
    """The naming scheme the packages of this branch use."""
    info = _os(os_id)
    if source == "distro":
        return "distro"
    if info["manager"] == "dnf":
        return "module_stream"
    if scheme in ("branch_in_name", "pinning"):
        return scheme
    return "pinning" if int(_branch_str(branch)) >= PINNING_FROM_BRANCH else "branch_in_name"


def nvidia_driver_packages(os_id, branch, source="cuda_repo", kernel_modules="open", scheme="auto"):
    """Driver packages (and how the branch is pinned) for one OS, branch, source and flavour."""
    info = _os(os_id)
    branch = _branch_str(branch)
    open_modules = kernel_modules == "open"
    used = nvidia_package_scheme(branch, os_id, source, scheme)
    result = {"packages": [], "pinning_packages": [], "module_stream": "", "scheme": used}

    if used == "distro":
        if os_id.startswith("debian"):
            result["packages"] = [DEBIAN_DISTRO_MODULES[kernel_modules]] + DEBIAN_DISTRO_COMMON
        elif os_id.startswith("ubuntu"):
            # Ubuntu's "server" (enterprise-support) builds, headless: no X server pulled in.
            flavour = "-open" if open_modules else ""
            result["packages"] = [f"nvidia-headless-{branch}-server{flavour}", f"nvidia-utils-{branch}-server"]
        else:
            raise ValueError(f"{info['label']} has no NVIDIA driver in its own archive")
    elif used == "module_stream":
        result["module_stream"] = f"nvidia-driver:{branch}-{'open' if open_modules else 'dkms'}"
        result["packages"] = ["nvidia-open"] if open_modules else ["cuda-drivers"]
    elif used == "pinning":
        result["pinning_packages"] = [f"nvidia-driver-pinning-{branch}"]
        result["packages"] = ["nvidia-open"] if open_modules else ["cuda-drivers"]
    else:  # branch_in_name
        result["packages"] = [f"nvidia-open-{branch}"] if open_modules else [f"cuda-drivers-{branch}"]
    return result


# NVIDIA Fabric Manager (NVSwitch boards) per source and naming scheme, always from where the driver comes:
# - NVIDIA's apt repository up to 580: nvidia-fabricmanager-<branch> (NVIDIA's packaging templates,
#   github.com/NVIDIA/apt-packaging-fabric-manager: cuda-drivers-fabricmanager-XXX, nvidia-fabricmanager-XXX).
# - NVIDIA's apt repository from 590: branch-less nvidia-fabricmanager, held on the branch by the same
#   nvidia-driver-pinning-<branch> package as the driver (NVIDIA driver installation guide, "Ubuntu 590 and later
#   packages": the branch designation is removed from the package names from 590 on).
# - RHEL (DNF module stream): nvidia-fabric-manager, whose version the enabled nvidia-driver:<branch>-* stream
#   holds (NVIDIA's RHEL instructions: dnf module install nvidia-driver:<branch>; dnf install nvidia-fabric-manager).
# - Ubuntu's own archive: nvidia-fabricmanager-<branch> for every branch, 535 to 595 (packages.ubuntu.com, source
#   fabric-manager-<branch>); it depends on nvidia-kernel-common-<branch>-server, the -server driver this role
#   installs from there.
# - Debian's own archive carries no Fabric Manager.
def nvidia_fabricmanager_packages(os_id, branch, source="cuda_repo", scheme="auto", driver_version=""):
    """The Fabric Manager package(s) for the driver branch, from the driver's source; [] where there is none.

    With ``driver_version`` (the running driver's, e.g. 580.95.05) each name is held to that exact version, as
    Fabric Manager refuses to start next to another one: ``name=580.95.05-*`` for apt (NVIDIA's revision -1,
    Ubuntu's -0ubuntu...), ``name-580.95.05`` for dnf.
    """
    info = _os(os_id)
    branch = _branch_str(branch)
    used = nvidia_package_scheme(branch, os_id, source, scheme)
    if used == "distro":
        names = [f"nvidia-fabricmanager-{branch}"] if os_id.startswith("ubuntu") else []
    elif used == "module_stream":
        names = ["nvidia-fabric-manager"]
    elif used == "pinning":
        names = ["nvidia-fabricmanager"]
    else:
        names = [f"nvidia-fabricmanager-{branch}"]
    version = str(driver_version or "").strip()
    if not version:
        return names
    if branch_of(version) != branch:
        raise ValueError(f"driver {version} is not of branch {branch}: Fabric Manager must match the running driver")
    return [f"{name}={version}-*" if info["manager"] == "apt" else f"{name}-{version}" for name in names]


def nvidia_toolkit_package(version):
    major, minor = str(version).strip().split(".")
    return f"cuda-toolkit-{major}-{minor}"


def nvidia_toolkit_home(version):
    return f"/usr/local/cuda-{str(version).strip()}"


def _choice_problem(variable, value, choices):
    if value in choices:
        return ""
    return (f"{variable} ({value!r}) is not one of {', '.join(choices)}. "
            f"Fix: set {variable} to one of: {', '.join(choices)}.")


def nvidia_cuda_problems(settings):
    """Every problem with the role's input, as messages naming the variable, problem and fix.

    ``settings`` holds the role variables without their ``nvidia_`` prefix plus ``os_id``
    (empty when no vars file matched), ``os_name`` (e.g. 'Rocky 8') and ``architecture``.
    """
    problems = []
    os_id = settings.get("os_id") or ""
    if os_id not in SUPPORTED_OS:
        problems.append(
            f"nvidia_cuda: {settings.get('os_name', 'this OS')!r} is not supported. "
            f"Supported: {', '.join(nvidia_supported_os_labels())}. "
            f"Fix: run the role only on those (limit the gpu_hosts group), or prepare this host's driver yourself "
            f"and leave it out of the role.")
    for variable, key, choices in (("nvidia_driver_source", "driver_source", SOURCES),
                                   ("nvidia_driver_kernel_modules", "driver_kernel_modules", KERNEL_MODULES),
                                   ("nvidia_driver_package_scheme", "driver_package_scheme", SCHEMES),
                                   ("nvidia_reboot", "reboot", REBOOT_MODES)):
        problem = _choice_problem(variable, settings.get(key), choices)
        if problem:
            problems.append(problem)
    if "fabricmanager_manage" in settings:
        problem = _choice_problem("nvidia_fabricmanager_manage", settings.get("fabricmanager_manage"),
                                  FABRICMANAGER_MODES)
        if problem:
            problems.append(problem)
        timeout = settings.get("fabricmanager_ready_timeout")
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
            problems.append(
                f"nvidia_fabricmanager_ready_timeout ({timeout!r}) must be a whole number of seconds, at least 1. "
                f"Fix: set nvidia_fabricmanager_ready_timeout: 300 (training an 8-GPU board takes about a minute).")

    branch = settings.get("driver_branch")
    branch_ok = isinstance(branch, (str, int)) and not isinstance(branch, bool) \
        and re.fullmatch(r"[1-9]\d{2}", str(branch).strip()) is not None
    if not branch_ok:
        problems.append(
            f"nvidia_driver_branch ({branch!r}) is not a driver branch. It must be the branch's three digits, "
            f"not a full version or a wildcard. Fix: set it like nvidia_driver_branch: \"580\".")

    version = settings.get("cuda_toolkit_version")
    if settings.get("cuda_toolkit_install"):
        if isinstance(version, float):
            problems.append(
                f"nvidia_cuda_toolkit_version ({version!r}) was read as a number by YAML (12.10 becomes 12.1). "
                f"Fix: quote it, e.g. nvidia_cuda_toolkit_version: \"12.8\".")
        elif not isinstance(version, str) or re.fullmatch(r"\d{2}\.\d{1,2}", version.strip()) is None:
            problems.append(
                f"nvidia_cuda_toolkit_version ({version!r}) must be MAJOR.MINOR of a CUDA release, such as \"12.8\" "
                f"(no patch level, no 'cuda-' prefix). Fix: set nvidia_cuda_toolkit_version: \"12.8\".")

    if os_id in SUPPORTED_OS and branch_ok and not problems:
        info = SUPPORTED_OS[os_id]
        branch = str(branch).strip()
        source = settings.get("driver_source")
        if source == "distro":
            if info["distro_branches"] == ():
                problems.append(
                    f"nvidia_driver_source (distro): {info['label']} has no NVIDIA driver in its own repositories. "
                    f"Fix: set nvidia_driver_source: cuda_repo (NVIDIA's CUDA repository).")
            elif info["distro_branches"] and branch not in info["distro_branches"]:
                problems.append(
                    f"nvidia_driver_branch ({branch}): {info['label']}'s own archive ships only branch "
                    f"{', '.join(info['distro_branches'])}. Fix: set nvidia_driver_branch: "
                    f"\"{info['distro_branches'][0]}\", or nvidia_driver_source: cuda_repo for branch {branch}.")
            if settings.get("driver_kernel_modules") == "open" and info.get("distro_open", True) is False:
                problems.append(
                    f"nvidia_driver_kernel_modules (open): {info['label']}'s open kernel module package "
                    f"(nvidia-open-kernel-dkms) lags the security updates of the rest of its driver, so apt cannot "
                    f"install a consistent, patched set. Fix: set nvidia_driver_kernel_modules: proprietary, or "
                    f"nvidia_driver_source: cuda_repo for open modules.")
            if settings.get("cuda_toolkit_install"):
                problems.append(
                    "nvidia_cuda_toolkit_install needs NVIDIA's CUDA repository, whose driver packages would replace "
                    "the distribution's (nvidia_driver_source: distro). Fix: set nvidia_driver_source: cuda_repo, "
                    "or nvidia_cuda_toolkit_install: false (vLLM's wheels carry their own CUDA runtime).")
            if settings.get("fabricmanager_manage") == "true" and os_id.startswith("debian"):
                problems.append(
                    f"nvidia_fabricmanager_manage (true): {info['label']}'s own archive has no NVIDIA Fabric Manager, "
                    f"which must come from the driver's source. Fix: set nvidia_driver_source: cuda_repo for "
                    f"NVSwitch boards, or nvidia_fabricmanager_manage: auto.")
            if settings.get("driver_package_scheme") not in ("auto", None):
                problems.append(
                    f"nvidia_driver_package_scheme ({settings.get('driver_package_scheme')}) only applies to "
                    f"nvidia_driver_source: cuda_repo on Debian/Ubuntu. Fix: leave it at auto.")
        if settings.get("driver_kernel_modules") == "open" and int(branch) < OPEN_MODULES_FROM_BRANCH:
            problems.append(
                f"nvidia_driver_kernel_modules (open): branch {branch} has no open kernel modules (they start with "
                f"{OPEN_MODULES_FROM_BRANCH}). Fix: set nvidia_driver_kernel_modules: proprietary, or a newer branch.")
        if source == "cuda_repo" and settings.get("architecture") not in ("x86_64", "aarch64"):
            problems.append(
                f"nvidia_cuda: architecture {settings.get('architecture')!r} has no NVIDIA CUDA repository "
                f"(x86_64 and aarch64/sbsa only). Fix: use an x86_64 or aarch64 host.")
        if source == "cuda_repo" and info["manager"] == "dnf" and settings.get("driver_package_scheme") == "pinning":
            problems.append(
                "nvidia_driver_package_scheme (pinning): RHEL pins the branch with a DNF module stream, there are no "
                "pinning packages. Fix: leave nvidia_driver_package_scheme at auto.")
        key = settings.get("cuda_repo_key_content") or ""
        if key and "-----BEGIN PGP PUBLIC KEY BLOCK-----" not in key:
            problems.append(
                "nvidia_cuda_repo_key_content is set but is not an ASCII-armored public key (no "
                "'-----BEGIN PGP PUBLIC KEY BLOCK-----' line). Fix: paste the whole .pub file NVIDIA publishes "
                "next to the repository (e.g. 3bf863cc.pub), or use lookup('file', PATH).")
    return problems


class FilterModule:
    def filters(self):
        return {
            "nvidia_driver_packages": nvidia_driver_packages,
            "nvidia_package_scheme": nvidia_package_scheme,
            "nvidia_fabricmanager_packages": nvidia_fabricmanager_packages,
            "nvidia_toolkit_package": nvidia_toolkit_package,
            "nvidia_toolkit_home": nvidia_toolkit_home,
            "nvidia_branch_of": nvidia_branch_of,
            "nvidia_cuda_problems": nvidia_cuda_problems,
            "nvidia_supported_os_labels": nvidia_supported_os_labels,
        }
