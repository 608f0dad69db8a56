#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Merge the managed keys into a Claude Code settings.json without losing what the user wrote."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: claude_code_settings
short_description: Merge managed keys into a Claude Code settings.json, keeping the user's own keys
description:
  - Reads an existing Claude Code settings file (C(~/.claude/settings.json) or the machine-wide
    C(/etc/claude-code/managed-settings.json)), sets the top-level C(model) and the managed
    C(env) variables, removes the env variables that contradict the managed setup, and writes the
    result atomically (temporary file in the same directory, then rename).
  - Every key the module does not manage (permissions, hooks, the user's own env variables, ...)
    is kept as it is. A file whose content already matches is not rewritten, so the user's own
    formatting survives too.
  - The previous file is backed up next to it whenever its content changes.
  - A file that is not valid JSON is never overwritten silently, see O(on_invalid_json).
  - Values of O(secret_env) never appear in the diff or the result.
version_added: "0.1.0"
options:
  path:
    description: Settings file to manage.
    type: path
    required: true
  model:
    description: Value of the top-level C(model) key (a tier alias such as C(sonnet)). Omit to leave it alone.
    type: str
  env:
    description: Managed, non-secret C(env) variables. Values are written as strings.
    type: dict
    default: {}
  secret_env:
    description: Managed secret C(env) variables (e.g. C(ANTHROPIC_AUTH_TOKEN)); masked in diff and result.
    type: dict
    default: {}
  remove_env:
    description: C(env) variables to remove because they contradict the managed setup.
    type: list
    elements: str
    default: []
  owner:
    description: Owner of the file (and of its backups).
    type: str
  group:
    description: Group of the file (and of its backups).
    type: str
  mode:
    description: Mode of the file and of its backups.
    type: raw
    default: "0600"
  backup:
    description: Copy the previous file to C(PATH.YYYYmmddTHHMMSS.bak) before changing its content.
    type: bool
    default: true
  on_invalid_json:
    description:
      - What to do when the existing file is not a JSON object.
      - C(fail) stops with an error naming the file and the parse error; nothing is changed.
      - C(backup_and_replace) moves the broken file to a backup and starts from an empty object.
    type: str
    choices: [fail, backup_and_replace]
    default: fail
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
author:
  - claude-vllm-fleet contributors
"""

EXAMPLES = r"""
- name: Point Claude Code at the fleet's vLLM server
  claude_code_settings:
    path: /home/alice/.claude/settings.json
    owner: alice
    group: alice
    model: sonnet
    env:
      ANTHROPIC_BASE_URL: http://gpu-01:8000
      ANTHROPIC_DEFAULT_SONNET_MODEL: Qwen3.5-27B
      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1"
    secret_env:
      ANTHROPIC_AUTH_TOKEN: "{{ llm_api_token }}"
    remove_env: [ANTHROPIC_API_KEY, ANTHROPIC_CUSTOM_MODEL_OPTION]
"""

RETURN = r"""
path:
  description: The settings file.
  returned: always
  type: str
created:
  description: Whether the file did not exist before.
  returned: always
  type: bool
updated_keys:
  description: Managed keys whose value was set or changed, as C(model) or C(env.NAME).
  returned: always
  type: list
  elements: str
  sample: [env.ANTHROPIC_BASE_URL]
removed_keys:
  description: Contradicting keys that were removed, as C(env.NAME).
  returned: always
  type: list
  elements: str
  sample: [env.ANTHROPIC_API_KEY]
backup_file:
  description: Where the previous file was copied, when it was.
  returned: when a backup was made
  type: str
"""

import copy
import grp
import json
import os
import pwd
import shutil
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule

SECRET_MASK = "********"


class InvalidSettings(Exception):
    """The existing file is not a JSON object with an object under env; `text` is what it holds."""

    def __init__(self, message, text):
        super().__init__(message)
        self.text = text


def load_settings(path):
    """Return (settings dict, raw text or None when missing). Raise InvalidSettings when unusable."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return {}, None
    if not text.strip():
        return {}, text
    try:
        settings = json.loads(text)
    except ValueError as exc:
        raise InvalidSettings(f"{path} is not valid JSON ({exc})", text) from exc
    if not isinstance(settings, dict):
        raise InvalidSettings(f"{path} holds a JSON {type(settings).__name__}, not an object", text)
    if not isinstance(settings.get("env", {}), dict):
        raise InvalidSettings(f"{path}: 'env' is a {type(settings['env']).__name__}, not an object", text)
    return settings, text


def merge_settings(current, model, env, secret_env, remove_env):
    """Pure merge. Returns (new settings, updated keys, removed keys); `current` is not modified."""
    merged = copy.deepcopy(current)
    updated, removed = [], []
    if model is not None and merged.get("model") != model:
        merged["model"] = model
        updated.append("model")
    merged_env = merged.setdefault("env", {})
    for name, value in list(env.items()) + list(secret_env.items()):
        value = str(value)
        if merged_env.get(name) != value:
            merged_env[name] = value
            updated.append(f"env.{name}")
    for name in remove_env:
        if name in merged_env and name not in env and name not in secret_env:
            del merged_env[name]
            removed.append(f"env.{name}")
    return merged, updated, removed


def render(settings):
    return json.dumps(settings, indent=2, ensure_ascii=False) + "\n"


def masked(settings, secret_names, tag=""):
    shown = copy.deepcopy(settings)
    for name in secret_names:
        if name in shown.get("env", {}):
            shown["env"][name] = SECRET_MASK + tag
    return shown


def write_atomically(path, text, mode, uid, gid):
    """Write to a temporary file in the same directory, set owner and mode, then rename over `path`."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), mode)
            if uid != -1 or gid != -1:
                os.fchown(handle.fileno(), uid, gid)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def backup_path(path):
    stamp = time.strftime("%Y%m%dT%H%M%S")
    candidate = f"{path}.{stamp}.bak"
    counter = 1
    while os.path.exists(candidate):
        candidate = f"{path}.{stamp}-{counter}.bak"
        counter += 1
    return candidate


def make_backup(path, mode, uid, gid, move=False):
    destination = backup_path(path)
    if move:
        os.replace(path, destination)
    else:
        shutil.copyfile(path, destination)
    os.chmod(destination, mode)
    if uid != -1 or gid != -1:
        os.chown(destination, uid, gid)
    return destination


def resolve_ids(module, owner, group):
    uid = _lookup(module, "user", owner) if owner else -1
    gid = _lookup(module, "group", group) if group else -1
    return uid, gid


def _lookup(module, kind, name):
    try:
        if str(name).isdigit():
            return int(name)
        return pwd.getpwnam(name).pw_uid if kind == "user" else grp.getgrnam(name).gr_gid
    except KeyError:
        module.fail_json(msg=f"claude_code_settings: {kind} '{name}' does not exist on this host")


def parse_mode(module, mode):
    try:
        return int(str(mode), 8) if not isinstance(mode, int) else mode
    except ValueError:
        module.fail_json(msg=f"claude_code_settings: mode {mode!r} is not an octal mode such as '0600'")


def run_module():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            model=dict(type="str"),
            env=dict(type="dict", default={}),
            secret_env=dict(type="dict", default={}, no_log=True),
            remove_env=dict(type="list", elements="str", default=[]),
            owner=dict(type="str"),
            group=dict(type="str"),
            mode=dict(type="raw", default="0600"),
            backup=dict(type="bool", default=True),
            on_invalid_json=dict(type="str", choices=["fail", "backup_and_replace"], default="fail"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    path = params["path"]
    mode = parse_mode(module, params["mode"])
    uid, gid = resolve_ids(module, params["owner"], params["group"])
    result = dict(changed=False, path=path, created=False, updated_keys=[], removed_keys=[])

    if not os.path.isdir(os.path.dirname(path) or ".") and not module.check_mode:
        module.fail_json(msg=f"claude_code_settings: directory {os.path.dirname(path)} does not exist", **result)

    replace_invalid = False
    try:
        current, old_text = load_settings(path)
    except InvalidSettings as exc:
        if params["on_invalid_json"] == "fail":
            module.fail_json(
                msg=(f"{exc}. It was left untouched. Fix: repair the JSON by hand, or set "
                     f"claude_code_invalid_json: backup_and_replace to move it to a backup and start fresh."),
                **result)
        current, old_text, replace_invalid = {}, exc.text, True
        module.warn(f"{exc}; it is moved to a backup and replaced")

    merged, updated, removed = merge_settings(
        current, params["model"], params["env"], params["secret_env"], params["remove_env"])
    result.update(created=old_text is None, updated_keys=updated, removed_keys=removed)
    content_changed = replace_invalid or old_text is None or merged != current
    if removed:
        module.warn(f"{path}: removed {', '.join(removed)}: they contradict the fleet's Claude Code setup")

    secrets = list(params["secret_env"])
    secret_changed = any(f"env.{name}" in updated for name in secrets)
    if module._diff:
        before_text = "" if old_text is None else (
            old_text if replace_invalid else render(masked(current, secrets, " (old)" if secret_changed else "")))
        result["diff"] = dict(
            before=before_text, after=render(masked(merged, secrets, " (new)" if secret_changed else "")),
            before_header=path, after_header=path)

    if content_changed:
        result["changed"] = True
        if not module.check_mode:
            if old_text is not None and (params["backup"] or replace_invalid):
                result["backup_file"] = make_backup(path, mode, uid, gid, move=replace_invalid)
            write_atomically(path, render(merged), mode, uid, gid)
    elif os.path.exists(path):
        file_args = module.load_file_common_arguments(
            dict(path=path, owner=params["owner"], group=params["group"], mode=params["mode"]))
        result["changed"] = module.set_fs_attributes_if_different(file_args, False)
    module.exit_json(**result)


def main():
    run_module()


if __name__ == "__main__":
    main()
