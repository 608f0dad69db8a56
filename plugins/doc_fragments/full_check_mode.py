# -*- coding: utf-8 -*-
"""Attributes of a module that supports check mode and diff mode fully."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
"""
