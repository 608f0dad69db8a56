# -*- coding: utf-8 -*-
"""NVIDIA facts shared by the nvidia_gpu_info module and the nvidia_packages filters (one home). Stdlib only."""

from __future__ import annotations

import re


def branch_of(driver_version):
    """The driver branch of a version: '580.95.05' -> '580', '580' -> '580'; '' when there is no version."""
    text = str(driver_version or "").strip()
    match = re.match(r"^(\d+)\.", text) or re.match(r"^(\d+)$", text)
    return match.group(1) if match else ""
