# -*- coding: utf-8 -*-
"""Where a vLLM unit's files may live: ProtectHome= and the bind mounts it needs, and the preflight's verdict on
whether the service user can read each local model directory."""

from __future__ import annotations

import json
import posixpath

DOCUMENTATION = r"""
name: vllm_unit_paths
short_description: ProtectHome= and bind mounts for a vLLM unit; model readability problems
description:
  - C(vllm_unit_paths) takes the paths the unit must read (the instance's local model directory, the
    install directory, the configuration directory, the interpreter's prefix; Hugging Face ids and other
    relative entries are ignored) and, as its argument, the paths it must write (the state directory).
    It returns C(protect_home) (C(yes) when none of them is under C(/home), C(/root) or C(/run/user);
    else C(tmpfs), which hides the other homes behind an empty tmpfs), C(temporary_file_system) (the same
    three tmpfs asked for read-only, which systemd before 257 does not do for C(tmpfs)), C(bind_read_only) and
    C(bind) (the paths under a home, made visible again with C(BindReadOnlyPaths=) and C(BindPaths=)),
    and C(read_write) (the writable paths elsewhere, for C(ReadWritePaths=) under C(ProtectSystem=strict)).
  - C(vllm_model_access_problems) turns the output of the role's readability check
    (C(files/vllm_model_readable.py), run as the service user) into messages naming the variable, the
    first unreadable path and the fix.
"""

HOMES = ("/home", "/root", "/run/user")


def _normal(path) -> str:
    text = posixpath.normpath(str(path).strip())
    return "/" + text.lstrip("/")  # normpath keeps a leading '//'


def _absolute(paths) -> list[str]:
    if isinstance(paths, (str, bytes)):
        paths = [paths]
    return [_normal(path) for path in paths or [] if str(path).strip().startswith("/")]


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def under_home(path) -> bool:
    """True when ProtectHome= hides the path: it is /home, /root or /run/user or under one of them."""
    return any(_inside(_normal(path), home) for home in HOMES)


def _outermost(paths) -> list[str]:
    """Unique paths, without those inside another one of the list (one mount covers them), sorted."""
    unique = sorted(set(paths))
    return [path for path in unique if not any(other != path and _inside(path, other) for other in unique)]


def vllm_unit_paths(read_only, read_write=()):
    """What a unit that reads `read_only` and writes `read_write` needs, as hardened as that allows."""
    writable = _absolute(read_write)
    readable = [path for path in _absolute(read_only) if path not in writable]
    bind = _outermost(path for path in writable if under_home(path))
    bind_read_only = _outermost(path for path in readable if under_home(path))  # read-only even inside a bind
    hidden = bool(bind or bind_read_only)
    return {
        "protect_home": "tmpfs" if hidden else "yes",
        # ProtectHome=tmpfs alone mounts the homes' tmpfs writable (mode 1777) on systemd 238-256, despite its
        # documentation (systemd issue 34825, fixed in 257; seen on Debian 12's 252): asked for explicitly, the
        # same tmpfs is read-only, and the bind mounts below still get their mount points in it.
        "temporary_file_system": [f"{home}:ro" for home in HOMES] if hidden else [],
        "bind": bind,
        "bind_read_only": bind_read_only,
        "read_write": _outermost(path for path in writable if not under_home(path)),
    }


def _variable(path, instances, vllm_model):
    names = [str(item.get("name")) for item in instances or [] if _absolute([item.get("model", "")]) == [path]]
    if vllm_model and _absolute([vllm_model]) == [path]:
        return "vllm_model" + (f" (instance {', '.join(names)})" if names else "")
    if names:
        return " / ".join(f"vllm_instances[{name}].model" for name in names)
    return "vllm_model"


def _describe(entry) -> str:
    details = " ".join(str(entry[key]) for key in ("mode", "owner") if entry.get(key))
    return f"{entry['path']}" + (f" ({details})" if details else "")


def vllm_model_access_problems(check_output, instances=(), vllm_model="", user="vllm", group="vllm",
                               user_exists=True):
    """Messages (variable, first unreadable path, fix) from the readability check's JSON output.

    `check_output` is what files/vllm_model_readable.py printed: {"models": {dir: {"files": n, "dirs": n,
    "count": unreadable entries, "unreadable": [{"path", "reason", "mode", "owner"}, ...]}}}.
    """
    try:
        report = json.loads(check_output) if isinstance(check_output, (str, bytes)) else dict(check_output)
    except (TypeError, ValueError):
        return []
    problems = []
    who = (f"the service user {user} (group {group})" if user_exists
           else f"a new system user (the service user {user} does not exist yet; checked as nobody, who, like "
                f"a new account, reads only what 'other' may)")
    for path, result in sorted((report.get("models") or {}).items()):
        unreadable = result.get("unreadable") or []
        if not unreadable:
            continue
        first = unreadable[0]
        count = int(result.get("count") or len(unreadable))
        what = ("cannot enter " if first.get("reason") == "not searchable" else "cannot read ") + _describe(first)
        if count > 1:
            what += f" ({count} unreadable paths in all)"
        if first["path"] != path and not _inside(first["path"], path):  # a parent directory
            grant = (f"chmod o+x {first['path']} (enter only, no listing)" if not user_exists
                     else f"chgrp {group} {first['path']} && chmod g+x {first['path']}, or chmod o+x {first['path']}")
        elif user_exists:
            grant = f"chgrp -R {group} {path} && chmod -R g+rX {path}"
        else:
            grant = f"chmod -R o+rX {path} (the group {group} does not exist before the role creates it)"
        problems.append(
            f"{_variable(path, instances, vllm_model)}: the local model directory {path} is not readable by {who}: "
            f"{what}. vLLM would fail to load it when it starts. "
            f"Fix: {grant}; or move the model to a directory the service can read, e.g. /srv/models.")
    return problems


class FilterModule:
    def filters(self):
        return {
            "vllm_unit_paths": vllm_unit_paths,
            "vllm_model_access_problems": vllm_model_access_problems,
        }
