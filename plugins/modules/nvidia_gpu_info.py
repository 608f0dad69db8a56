#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Read-only detection of NVIDIA GPUs (sysfs) and of a working driver (nvidia-smi)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nvidia_gpu_info
short_description: Detect NVIDIA GPUs on the PCI bus and the driver that drives them
description:
  - Lists PCI display controllers of vendor C(0x10de) from sysfs (no lspci needed), asks
    C(nvidia-smi) for the running driver version and the GPUs it sees, and reports which kernel
    modules are loaded. Never changes anything (check mode safe).
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
  description: NVIDIA display/3D controllers on the PCI bus.
  type: list
  elements: dict
  returned: always
  sample: [{"address": "0000:17:00.0", "device": "0x2330", "class": "0x030200", "pre_turing": false}]
gpu_count:
  description: Number of entries in C(pci_gpus).
  type: int
  returned: always
pre_turing:
  description: PCI addresses of GPUs older than Turing (they need the proprietary kernel modules).
  type: list
  elements: str
  returned: always
nvidia_smi:
  description: >-
    C(found) (binary present), C(ok) (it answered), C(driver_version), C(branch), C(gpus)
    (index, name, bus_id, driver_version each) and C(error) (its output when it failed).
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
from ansible_collections.claude_vllm.fleet.plugins.module_utils.nvidia import branch_of

NVIDIA_VENDOR = "0x10de"
# PCI base class 0x03: display controllers (0x0300 VGA, 0x0302 3D controller, 0x0380 other).
DISPLAY_CLASS_PREFIX = "0x03"
# Turing's first device id; everything below is Volta, Pascal or older (no open kernel modules).
TURING_FIRST_DEVICE_ID = 0x1E00


def _read(path):
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def scan_pci(sysfs_pci_path):
    gpus = []
    try:
        entries = sorted(os.listdir(sysfs_pci_path))
    except OSError:
        return gpus
    for address in entries:
        base = os.path.join(sysfs_pci_path, address)
        if _read(os.path.join(base, "vendor")).lower() != NVIDIA_VENDOR:
            continue
        pci_class = _read(os.path.join(base, "class")).lower()
        if not pci_class.startswith(DISPLAY_CLASS_PREFIX):
            continue  # HDMI audio, NVSwitch bridges, USB controllers of the same card
        device = _read(os.path.join(base, "device")).lower()
        try:
            pre_turing = int(device, 16) < TURING_FIRST_DEVICE_ID
        except ValueError:
            pre_turing = False
        gpus.append({"address": address, "device": device, "class": pci_class, "pre_turing": pre_turing})
    return gpus


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
    pci_gpus = scan_pci(params["sysfs_pci_path"])
    smi = {"found": False, "ok": False, "driver_version": "", "branch": "", "gpus": [], "error": ""}
    binary = module.get_bin_path("nvidia-smi", opt_dirs=["/usr/bin", "/usr/local/bin", "/usr/sbin"])
    if binary:
        smi["found"] = True
        cmd = ["timeout", str(params["nvidia_smi_timeout"]), binary,
               "--query-gpu=index,name,pci.bus_id,driver_version", "--format=csv,noheader"]
        if not module.get_bin_path("timeout"):
            cmd = cmd[2:]
        rc, out, err = module.run_command(cmd)
        gpus = parse_nvidia_smi(out) if rc == 0 else []
        if rc == 0 and gpus:
            smi.update(ok=True, gpus=gpus, driver_version=gpus[0]["driver_version"],
                       branch=branch_of(gpus[0]["driver_version"]))
        else:
            smi["error"] = (out + err).strip()[-2000:] or f"nvidia-smi exited with {rc}"
    module_path = params["sysfs_module_path"]
    module.exit_json(
        changed=False,
        pci_gpus=pci_gpus,
        gpu_count=len(pci_gpus),
        pre_turing=[gpu["address"] for gpu in pci_gpus if gpu["pre_turing"]],
        nvidia_smi=smi,
        kernel_module=kernel_module_info(params["proc_driver_version"]),
        nouveau_loaded=os.path.isdir(os.path.join(module_path, "nouveau")),
        uvm_loaded=os.path.isdir(os.path.join(module_path, "nvidia_uvm")),
    )


if __name__ == "__main__":
    main()
