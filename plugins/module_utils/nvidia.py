# -*- coding: utf-8 -*-
"""NVIDIA facts shared by the nvidia_gpu_info module and the nvidia_packages filters (one home). Stdlib only."""

from __future__ import annotations

import re


def branch_of(driver_version):
    """The driver branch of a version: '580.95.05' -> '580', '580' -> '580'; '' when there is no version."""
    text = str(driver_version or "").strip()
    match = re.match(r"^(\d+)\.", text) or re.match(r"^(\d+)$", text)
    return match.group(1) if match else ""


# --- PCI facts (sysfs) ------------------------------------------------------------------------

NVIDIA_VENDOR = "0x10de"
# PCI base class 0x03: display controllers (0x0300 VGA, 0x0302 3D controller, 0x0380 other).
DISPLAY_CLASS_PREFIX = "0x03"
# NVSwitch chips of HGX/DGX baseboards show up as NVIDIA PCI bridges of sub-class "other" (class 0x068000):
# lspci calls them "Bridge: NVIDIA Corporation ... NVSwitch" (GA100 A100 NVSwitch 10de:1af1, GH100 H100 NVSwitch
# 10de:22a3). Nothing else NVIDIA ships has that class.
NVSWITCH_CLASS_PREFIX = "0x0680"


def normalize_bus_id(bus_id):
    """One spelling of a PCI address: nvidia-smi's '00000000:18:00.0' and sysfs's '0000:18:00.0' both become
    '0000:18:00.0' (lower case, four-digit domain); '' for something that is not an address."""
    match = re.fullmatch(r"\s*(?:([0-9a-fA-F]{4,8}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])\s*", str(bus_id or ""))
    if not match:
        return ""
    domain = (match.group(1) or "0").lower()[-4:].rjust(4, "0")
    return f"{domain}:{match.group(2).lower()}:{match.group(3).lower()}.{match.group(4)}"


# --- nvidia-smi -q ----------------------------------------------------------------------------

# Fabric states as nvidia-smi -q prints them (NVML nvmlGpuFabricState_t: Not Started, In Progress, Completed).
FABRIC_COMPLETED = "Completed"
FABRIC_WAITING = ("Not Started", "In Progress")
# What a GPU without fabric reporting prints: PCIe cards, single GPUs, and A100 boards (whose driver reports
# N/A even with Fabric Manager running: FM's service state is all there is there).
FABRIC_NOT_REPORTED = ("", "N/A", "Not Supported")
FABRIC_SUCCESS = "Success"


def _q_tree(lines):
    """`key : value` lines of one GPU block into nested dicts by indentation; a line without ':' opens a section."""
    root = {}
    stack = [(-1, root)]
    for line in lines:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        while len(stack) > 1 and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        if " : " in line or line.rstrip().endswith(" :"):
            key, _, value = line.strip().partition(":")
            parent.setdefault(key.strip(), value.strip())
        else:
            section = {}
            parent.setdefault(line.strip(), section)
            stack.append((indent, section))
    return root


def parse_nvidia_smi_q(text):
    """The GPUs of `nvidia-smi -q` output, one dict each, in the order printed:

    bus_id (normalized, see normalize_bus_id), product, driver_version (from the header), mig_current and
    mig_pending ('Enabled', 'Disabled', or 'N/A' on GPUs without MIG; '' when not printed), fabric_state and
    fabric_status ('' when the driver prints no Fabric section), fabric_clique_id ('' when absent).
    """
    header, blocks, current = [], [], None
    for line in str(text or "").splitlines():
        match = re.match(r"^GPU\s+([0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7])\s*$", line)
        if match:
            current = (match.group(1), [])
            blocks.append(current)
        elif current is None:
            header.append(line)
        else:
            current[1].append(line)
    driver_version = ""
    for line in header:
        key, _, value = line.partition(":")
        if key.strip() == "Driver Version":
            driver_version = value.strip()
    gpus = []
    for bus_id, lines in blocks:
        tree = _q_tree(lines)
        mig = tree.get("MIG Mode") if isinstance(tree.get("MIG Mode"), dict) else {}
        fabric = tree.get("Fabric") if isinstance(tree.get("Fabric"), dict) else {}
        gpus.append({
            "bus_id": normalize_bus_id(bus_id),
            "product": tree.get("Product Name", "") if isinstance(tree.get("Product Name"), str) else "",
            "driver_version": driver_version,
            "mig_current": mig.get("Current", "") if isinstance(mig.get("Current"), str) else "",
            "mig_pending": mig.get("Pending", "") if isinstance(mig.get("Pending"), str) else "",
            "fabric_state": fabric.get("State", "") if isinstance(fabric.get("State"), str) else "",
            "fabric_status": fabric.get("Status", "") if isinstance(fabric.get("Status"), str) else "",
            "fabric_clique_id": fabric.get("CliqueId", "") if isinstance(fabric.get("CliqueId"), str) else "",
        })
    return gpus


def fabric_verdict(gpu):
    """How one GPU of parse_nvidia_smi_q stands with the NVLink fabric: 'ready' (Completed, Success),
    'waiting' (Not Started / In Progress), 'failed' (Completed with another status: training ended in error,
    e.g. 'Insufficient Resources'), or 'not_reported' (no fabric reporting on this GPU or driver)."""
    state = gpu.get("fabric_state", "")
    if state == FABRIC_COMPLETED:
        return "ready" if gpu.get("fabric_status", "") == FABRIC_SUCCESS else "failed"
    if state in FABRIC_WAITING:
        return "waiting"
    if state in FABRIC_NOT_REPORTED:
        return "not_reported"
    return "waiting"  # a state this code does not know yet: keep polling, the timeout names it
