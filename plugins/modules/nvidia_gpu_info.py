#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Read-only detection of NVIDIA GPUs (sysfs) and of a working driver (nvidia-smi)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nvidia_gpu_info
short_description: Detect NVIDIA GPUs on the PCI bus and the driver that drives them
description:
  - Lists PCI display controllers of vendor C(0x10de) from sysfs (no lspci needed) with the kernel
    driver bound to each, and the NVSwitch chips of HGX/DGX baseboards (NVIDIA PCI bridges of class
    C(0x0680)); asks C(nvidia-smi) for the running driver version and the GPUs it sees, and
    C(nvidia-smi -q) for each GPU's MIG mode and NVLink fabric state; reports which kernel modules
    are loaded. Never changes anything (check mode safe).
options:
  sysfs_pci_path:
    description: Directory holding one directory per PCI function (tests point it elsewhere).
    type: path
    default: /sys/bus/pci/devices
  sysfs_module_path:
    description: Directory listing the loaded kernel modules.
    type: path
    default: /sys/module
  proc_driver_version:
    description: The loaded NVIDIA kernel module's version file.
    type: path
    default: /proc/driver/nvidia/version
  nvidia_smi_timeout:
    description: Seconds to wait for nvidia-smi.
    type: int
    default: 60
author: claude-vllm-fleet contributors
"""

EXAMPLES = r"""
- name: Detect GPUs and the driver
  nvidia_gpu_info:
  register: gpu_info
"""

RETURN = r"""
pci_gpus:
  description: >-
    NVIDIA display/3D controllers on the PCI bus, with the kernel C(driver) bound to each (C('') when
    none is).
  type: list
  elements: dict
  returned: always
  sample: [{"address": "0000:17:00.0", "device": "0x2330", "class": "0x030200", "pre_turing": false, "driver": "nvidia"}]
gpu_count:
  description: Number of entries in C(pci_gpus).
  type: int
  returned: always
nvswitches:
  description: >-
    NVSwitch chips on the PCI bus (NVIDIA vendor, PCI class C(0x0680xx)), each with C(address),
    C(device) and C(driver) (the bound kernel driver, C(nvidia-nvswitch) when the driver runs).
    HGX B200/B300 boards manage their NVSwitches over NVLink management NICs instead and may list none here.
  type: list
  elements: dict
  returned: always
  sample: [{"address": "0000:05:00.0", "device": "0x22a3", "driver": "nvidia-nvswitch"}]
fabric_manager_needed:
  description: >-
    Whether NVIDIA Fabric Manager must run before CUDA works here: NVSwitches on the PCI bus, or a GPU
    whose driver reports an NVLink fabric state (C(nvidia-smi -q) section Fabric, anything but N/A).
  type: bool
  returned: always
mig:
  description: >-
    Per GPU seen by nvidia-smi (C(-q)): C(bus_id), C(current) and C(pending) MIG mode (C(Enabled),
    C(Disabled), C(N/A) on GPUs without MIG). Empty without a working nvidia-smi. A GPU with MIG enabled
    runs CUDA only in the MIG instances created on it, not as one whole GPU.
  type: list
  elements: dict
  returned: always
  sample: [{"bus_id": "0000:18:00.0", "current": "Enabled", "pending": "Enabled"}]
mig_enabled:
  description: Bus ids of GPUs whose current or pending MIG mode is C(Enabled).
  type: list
  elements: str
  returned: always
gpus_missing_from_driver:
  description: >-
    GPUs on the PCI bus that the NVIDIA driver does not drive: no kernel driver or another one
    bound (vfio-pci, nouveau) in sysfs, or not listed by a working nvidia-smi (fallen off the bus,
    failed to initialise). Each has C(address), C(driver) and C(reason).
  type: list
  elements: dict
  returned: always
  sample: [{"address": "0000:db:00.0", "driver": "", "reason": "no kernel driver bound in sysfs"}]
pre_turing:
  description: PCI addresses of GPUs older than Turing (they need the proprietary kernel modules).
  type: list
  elements: str
  returned: always
nvidia_smi:
  description: >-
    C(found) (binary present), C(ok) (it answered), C(driver_version), C(branch), C(gpus)
    (index, name, bus_id, driver_version each; plus mig_current, mig_pending, fabric_state and
    fabric_status from C(nvidia-smi -q), empty when it printed none) and C(error) (its output when it failed).
  type: dict
  returned: always
kernel_module:
  description: C(loaded), C(version) and C(flavor) (C(open) or C(proprietary)) of the nvidia module.
  type: dict
  returned: always
nouveau_loaded:
  description: Whether the nouveau module is loaded (a reboot is then needed before nvidia loads).
  type: bool
  returned: always
uvm_loaded:
  description: Whether nvidia_uvm (needed by CUDA) is loaded.
  type: bool
  returned: always
"""

import os
import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.claude_vllm.fleet.plugins.module_utils.nvidia import (
    DISPLAY_CLASS_PREFIX, NVIDIA_VENDOR, NVSWITCH_CLASS_PREFIX, branch_of, fabric_verdict, normalize_bus_id,
    parse_nvidia_smi_q)

# Turing's first device id; everything below is Volta, Pascal or older (no open kernel modules).
TURING_FIRST_DEVICE_ID = 0x1E00


def _read(path):
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _bound_driver(base):
    """The kernel driver bound to a PCI function: the name its sysfs 'driver' link points to, '' when none."""
    try:
        return os.path.basename(os.readlink(os.path.join(base, "driver")))
    except OSError:
        return ""


def scan_pci_devices(sysfs_pci_path):
    """NVIDIA GPUs and NVSwitches from sysfs: (gpus, nvswitches)."""
    gpus, nvswitches = [], []
    try:
        entries = sorted(os.listdir(sysfs_pci_path))
    except OSError:
        return gpus, nvswitches
    for address in entries:
        base = os.path.join(sysfs_pci_path, address)
        if _read(os.path.join(base, "vendor")).lower() != NVIDIA_VENDOR:
            continue
        pci_class = _read(os.path.join(base, "class")).lower()
        device = _read(os.path.join(base, "device")).lower()
        if pci_class.startswith(NVSWITCH_CLASS_PREFIX):
            nvswitches.append({"address": address, "device": device, "driver": _bound_driver(base)})
            continue
        if not pci_class.startswith(DISPLAY_CLASS_PREFIX):
            continue  # HDMI audio, USB controllers of the same card
        try:
            pre_turing = int(device, 16) < TURING_FIRST_DEVICE_ID
        except ValueError:
            pre_turing = False
        gpus.append({"address": address, "device": device, "class": pci_class, "pre_turing": pre_turing,
                     "driver": _bound_driver(base)})
    return gpus, nvswitches


def scan_pci(sysfs_pci_path):
    """NVIDIA GPUs (display/3D controllers) from sysfs."""
    return scan_pci_devices(sysfs_pci_path)[0]


def missing_from_driver(pci_gpus, smi):
    """GPUs on the PCI bus that the NVIDIA driver does not drive, each with the reason."""
    seen = {normalize_bus_id(gpu["bus_id"]) for gpu in smi["gpus"]}
    missing = []
    for gpu in pci_gpus:
        if gpu["driver"] != "nvidia":
            reason = (f"kernel driver {gpu['driver']} bound instead of nvidia" if gpu["driver"]
                      else "no kernel driver bound in sysfs")
        elif smi["ok"] and normalize_bus_id(gpu["address"]) not in seen:
            reason = "bound to nvidia but not listed by nvidia-smi"
        else:
            continue
        missing.append({"address": gpu["address"], "driver": gpu["driver"], "reason": reason})
    return missing


def merge_smi_q(smi, q_gpus):
    """Add each GPU's MIG mode and fabric state from nvidia-smi -q to smi['gpus'] (matched by bus id)."""
    by_bus = {gpu["bus_id"]: gpu for gpu in q_gpus}
    for gpu in smi["gpus"]:
        found = by_bus.get(normalize_bus_id(gpu["bus_id"]), {})
        for key in ("mig_current", "mig_pending", "fabric_state", "fabric_status"):
            gpu[key] = found.get(key, "")
    return smi


def parse_nvidia_smi(output):
    """Lines of 'index, name, pci.bus_id, driver_version' (csv, noheader)."""
    gpus = []
    for line in output.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) < 4 or not fields[0].isdigit():
            continue
        gpus.append({"index": int(fields[0]), "name": ", ".join(fields[1:-2]),
                     "bus_id": fields[-2], "driver_version": fields[-1]})
    return gpus



def kernel_module_info(proc_driver_version):
    text = _read(proc_driver_version)
    if not text:
        return {"loaded": False, "version": "", "flavor": ""}
    match = re.search(r"Kernel Module(?: for \S+)?\s+(\d+\.\d+(?:\.\d+)?)", text)
    flavor = "open" if "Open Kernel Module" in text else "proprietary"
    return {"loaded": True, "version": match.group(1) if match else "", "flavor": flavor}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            sysfs_pci_path=dict(type="path", default="/sys/bus/pci/devices"),
            sysfs_module_path=dict(type="path", default="/sys/module"),
            proc_driver_version=dict(type="path", default="/proc/driver/nvidia/version"),
            nvidia_smi_timeout=dict(type="int", default=60),
        ),
        supports_check_mode=True,
    )
    params = module.params
    pci_gpus, nvswitches = scan_pci_devices(params["sysfs_pci_path"])
    smi = {"found": False, "ok": False, "driver_version": "", "branch": "", "gpus": [], "error": ""}
    binary = module.get_bin_path("nvidia-smi", opt_dirs=["/usr/bin", "/usr/local/bin", "/usr/sbin"])
    q_gpus = []
    if binary:
        smi["found"] = True
        prefix = ["timeout", str(params["nvidia_smi_timeout"])] if module.get_bin_path("timeout") else []
        rc, out, err = module.run_command(
            prefix + [binary, "--query-gpu=index,name,pci.bus_id,driver_version", "--format=csv,noheader"])
        gpus = parse_nvidia_smi(out) if rc == 0 else []
        if rc == 0 and gpus:
            smi.update(ok=True, gpus=gpus, driver_version=gpus[0]["driver_version"],
                       branch=branch_of(gpus[0]["driver_version"]))
            rc, out, err = module.run_command(prefix + [binary, "-q"])
            q_gpus = parse_nvidia_smi_q(out) if rc == 0 else []
        else:
            smi["error"] = (out + err).strip()[-2000:] or f"nvidia-smi exited with {rc}"
    merge_smi_q(smi, q_gpus)
    fabric_reported = [gpu for gpu in q_gpus if fabric_verdict(gpu) != "not_reported"]
    mig = [{"bus_id": gpu["bus_id"], "current": gpu["mig_current"], "pending": gpu["mig_pending"]} for gpu in q_gpus]
    module_path = params["sysfs_module_path"]
    module.exit_json(
        changed=False,
        pci_gpus=pci_gpus,
        gpu_count=len(pci_gpus),
        nvswitches=nvswitches,
        fabric_manager_needed=bool(nvswitches or fabric_reported),
        mig=mig,
        mig_enabled=[entry["bus_id"] for entry in mig if "Enabled" in (entry["current"], entry["pending"])],
        gpus_missing_from_driver=missing_from_driver(pci_gpus, smi),
        pre_turing=[gpu["address"] for gpu in pci_gpus if gpu["pre_turing"]],
        nvidia_smi=smi,
        kernel_module=kernel_module_info(params["proc_driver_version"]),
        nouveau_loaded=os.path.isdir(os.path.join(module_path, "nouveau")),
        uvm_loaded=os.path.isdir(os.path.join(module_path, "nvidia_uvm")),
    )


if __name__ == "__main__":
    main()
