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
  - Safe as root in a user's home. A settings file or directory that is a link (a dotfiles
    manager's) is followed and left in place, but only into a directory and a file that O(owner)
    owns; anything else (a link to a root-owned file, a hard link to another user's file, a FIFO)
    is refused before it is read, so a user cannot make the fleet run read or overwrite another file.
    Every write goes through the opened directory and never follows a link.
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
  directory_mode:
    description:
      - When set, the file's directory is created when missing and, unless it is a link, given
        O(owner), O(group) and this mode (e.g. C(0700) for C(~/.claude)).
      - When omitted, the directory must exist and is left as it is.
    type: raw
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
    directory_mode: "0700"
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
followed_link_to:
  description: The file actually updated, when O(path) is a link (the link itself is kept).
  returned: when O(path) leads through a link
  type: str
"""

import copy
import errno
import grp
import json
import os
import pwd
import stat
import time

from ansible.module_utils.basic import AnsibleModule

SECRET_MASK = "********"
DIRECTORY_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)


class InvalidSettings(Exception):
    """The existing file is not a JSON object with an object under env; `text` is what it holds."""

    def __init__(self, message, text):
        super().__init__(message)
        self.text = text


class MissingDirectory(Exception):
    """The settings file's directory does not exist and may not be created."""


class UnsafePath(Exception):
    """The settings path leads somewhere the module must not read or write as root."""


class SettingsLocation:
    """Where the settings file really is: an open directory, the file's name in it, what it holds.

    Every later operation (backup, write, mode and owner) goes through `dir_fd` and `name`, so
    a link swapped in after the checks cannot redirect it.
    """

    def __init__(self, path):
        self.path = path            # the path as given (shown to the user)
        self.real_path = path       # the file actually managed (differs when a link was followed)
        self.dir_fd = None          # None: the directory does not exist yet (check mode)
        self.name = os.path.basename(path)
        self.raw = None             # bytes of the existing file, None when there is none
        self.file_stat = None
        self.directory_changed = False

    def close(self):
        if self.dir_fd is not None:
            os.close(self.dir_fd)
            self.dir_fd = None


def _kind(mode):
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def _attributes_differ(info, mode, uid, gid):
    """Whether a stat result differs from the wanted mode, owner and group (-1: any owner or group)."""
    return (stat.S_IMODE(info.st_mode) != mode or (uid != -1 and info.st_uid != uid)
            or (gid != -1 and info.st_gid != gid))


def _set_attributes(fd, mode, uid, gid):
    """Give an open file or directory its mode, then its owner and group (-1: leave as is)."""
    os.fchmod(fd, mode)
    if uid != -1 or gid != -1:
        os.fchown(fd, uid, gid)


def _open_directory(directory, trusted_uid, link=None):
    """Open `directory` (links followed). When reached through `link`, refuse one `trusted_uid` does not own."""
    dir_fd = os.open(directory, DIRECTORY_FLAGS)
    owner = os.fstat(dir_fd).st_uid
    if link is not None and owner != trusted_uid:
        os.close(dir_fd)
        raise UnsafePath(f"{link} is a link into {os.path.realpath(directory)}, a directory owned by uid {owner}, "
                         f"not by the settings file's owner (uid {trusted_uid})")
    return dir_fd


def _settle_directory(location, directory, trusted_uid, uid, gid, dir_mode, check_mode):
    """Open the settings directory, creating it or fixing its owner and mode when `dir_mode` is given."""
    try:
        before = os.lstat(directory)
    except FileNotFoundError:
        if dir_mode is None:
            if check_mode:
                return
            raise MissingDirectory(f"directory {directory} does not exist. Fix: create it first, or set "
                                   "directory_mode to let the module create it") from None
        location.directory_changed = True
        if check_mode:
            return
        try:
            os.mkdir(directory, 0o700)
        except FileNotFoundError:
            raise MissingDirectory(f"{os.path.dirname(directory)} does not exist, so {directory} cannot be "
                                   "created. Fix: create the user's home directory first") from None
        before = os.lstat(directory)
    if stat.S_ISLNK(before.st_mode):
        # A link the user made (a dotfiles manager): followed only into a directory the owner owns,
        # and left as it is.
        location.dir_fd = _open_directory(directory, trusted_uid, link=directory)
        location.real_path = os.path.join(os.path.realpath(directory), location.name)
        return
    location.dir_fd = _open_directory(directory, trusted_uid)
    opened = os.fstat(location.dir_fd)
    if (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino):
        raise UnsafePath(f"{directory} was replaced while it was being opened")
    if dir_mode is None:
        return
    if _attributes_differ(opened, dir_mode, uid, gid):
        location.directory_changed = True
        if not check_mode:
            _set_attributes(location.dir_fd, dir_mode, uid, gid)


def _open_file(location, trusted_uid, followed):
    """Read the file named `location.name` in the open directory without following a link."""
    try:
        fd = os.open(location.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=location.dir_fd)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return True  # a link: the caller decides
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePath(f"{location.real_path} is {_kind(info.st_mode)}")
        if followed and info.st_uid != trusted_uid:
            raise UnsafePath(f"{location.path} is a link to {location.real_path}, a file owned by uid "
                             f"{info.st_uid}, not by the settings file's owner (uid {trusted_uid})")
        if info.st_nlink > 1 and info.st_uid != trusted_uid:
            raise UnsafePath(f"{location.real_path} is a hard link to a file owned by uid {info.st_uid}")
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        location.raw, location.file_stat = b"".join(chunks), info
    finally:
        os.close(fd)
    return False


def locate_settings(path, uid, gid, dir_mode=None, check_mode=False):
    """Find, check and read the settings file; see SettingsLocation. Raises UnsafePath.

    Runs as root in the user's home, so a link the user made must not lead root to read or
    overwrite another file: the file's directory and a file reached through a link must belong
    to the owner (`uid`, or the module's own user when no owner is given). A link is followed
    (dotfiles managers keep working) and left in place; the file it points to is the one updated.
    """
    trusted_uid = uid if uid != -1 else os.geteuid()
    location = SettingsLocation(path)
    try:
        _settle_directory(location, os.path.dirname(path) or ".", trusted_uid, uid, gid, dir_mode, check_mode)
        if location.dir_fd is None:
            return location
        if _open_file(location, trusted_uid, followed=False):
            target = os.path.realpath(path)
            location.close()
            location.real_path, location.name = target, os.path.basename(target)
            location.dir_fd = _open_directory(os.path.dirname(target), trusted_uid, link=path)
            if _open_file(location, trusted_uid, followed=True):
                raise UnsafePath(f"{path} is a link that changed while it was being followed")
        return location
    except BaseException:
        location.close()
        raise


def parse_settings(path, raw):
    """Return (settings, text) from the file's bytes (None when missing: text None). Raise InvalidSettings."""
    if raw is None:
        return {}, None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidSettings(f"{path} is not UTF-8 text ({exc})", raw.decode("utf-8", "replace")) from exc
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


def _create_exclusive(dir_fd, name, data, mode, uid, gid):
    """Create `name` in the directory (never through a link, never over a file) holding `data`."""
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd)
    try:
        _set_attributes(fd, mode, uid, gid)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(dir_fd, name, text, mode, uid, gid):
    """Write a temporary file in the same directory, set owner and mode, then rename it over `name`."""
    tmp = ".%s.%d.%s.tmp" % (name, os.getpid(), os.urandom(4).hex())
    try:
        _create_exclusive(dir_fd, tmp, text.encode("utf-8"), mode, uid, gid)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        raise
    os.fsync(dir_fd)


def backup_name(dir_fd, name):
    stamp = time.strftime("%Y%m%dT%H%M%S")
    candidate, counter = f"{name}.{stamp}.bak", 1
    while _exists(dir_fd, candidate):
        candidate, counter = f"{name}.{stamp}-{counter}.bak", counter + 1
    return candidate


def _exists(dir_fd, name):
    try:
        os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


def make_backup(location, mode, uid, gid, move=False):
    """Keep the previous file next to the managed one: moved (broken file) or copied from what was read."""
    destination = backup_name(location.dir_fd, location.name)
    if move:
        os.replace(location.name, destination, src_dir_fd=location.dir_fd, dst_dir_fd=location.dir_fd)
        fd = os.open(destination, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=location.dir_fd)
        try:
            _set_attributes(fd, mode, uid, gid)
        finally:
            os.close(fd)
    else:
        _create_exclusive(location.dir_fd, destination, location.raw, mode, uid, gid)
    return os.path.join(os.path.dirname(location.real_path), destination)


def fix_attributes(location, mode, uid, gid):
    """Set owner and mode of the unchanged file (opened without following links). Returns whether it changed."""
    info = location.file_stat
    if not _attributes_differ(info, mode, uid, gid):
        return False
    fd = os.open(location.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=location.dir_fd)
    try:
        current = os.fstat(fd)
        if (current.st_dev, current.st_ino) != (info.st_dev, info.st_ino):
            raise UnsafePath(f"{location.real_path} was replaced while it was being updated")
        _set_attributes(fd, mode, uid, gid)
    finally:
        os.close(fd)
    return True


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


def parse_mode(module, mode, option="mode"):
    try:
        return int(str(mode), 8) if not isinstance(mode, int) else mode
    except ValueError:
        module.fail_json(msg=f"claude_code_settings: {option} {mode!r} is not an octal mode such as '0600'")


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
            directory_mode=dict(type="raw"),
            backup=dict(type="bool", default=True),
            on_invalid_json=dict(type="str", choices=["fail", "backup_and_replace"], default="fail"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    path = params["path"]
    mode = parse_mode(module, params["mode"])
    dir_mode = None if params["directory_mode"] is None else parse_mode(
        module, params["directory_mode"], "directory_mode")
    uid, gid = resolve_ids(module, params["owner"], params["group"])
    result = dict(changed=False, path=path, created=False, updated_keys=[], removed_keys=[])

    try:
        location = locate_settings(path, uid, gid, dir_mode, module.check_mode)
    except UnsafePath as exc:
        module.fail_json(msg=(f"claude_code_settings: {exc}. Nothing was read or changed: as root, following it could "
                              "expose or overwrite another file. Fix: make the settings file (and its directory) a "
                              "regular file (directory) owned by the user, or point the link at one the user owns."),
                         **result)
    except MissingDirectory as exc:
        module.fail_json(msg=f"claude_code_settings: {exc}", **result)
    try:
        result.update(run_merge(module, location, mode, uid, gid))
    finally:
        location.close()
    module.exit_json(**result)


def run_merge(module, location, mode, uid, gid):
    params, path = module.params, location.path
    result = dict(created=location.raw is None)
    if location.real_path != path:
        result["followed_link_to"] = location.real_path
    replace_invalid = False
    try:
        current, old_text = parse_settings(location.real_path, location.raw)
    except InvalidSettings as exc:
        if params["on_invalid_json"] == "fail":
            module.fail_json(
                msg=(f"{exc}. It was left untouched. Fix: repair the JSON by hand, or set "
                     f"claude_code_invalid_json: backup_and_replace to move it to a backup and start fresh."),
                path=path, changed=False)
        current, old_text, replace_invalid = {}, exc.text, True
        module.warn(f"{exc}; it is moved to a backup and replaced")

    merged, updated, removed = merge_settings(
        current, params["model"], params["env"], params["secret_env"], params["remove_env"])
    result.update(updated_keys=updated, removed_keys=removed)
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
            before_header=location.real_path, after_header=location.real_path)

    result["changed"] = location.directory_changed
    if content_changed:
        result["changed"] = True
        if not module.check_mode:
            if old_text is not None and (params["backup"] or replace_invalid):
                result["backup_file"] = make_backup(location, mode, uid, gid, move=replace_invalid)
            write_atomically(location.dir_fd, location.name, render(merged), mode, uid, gid)
    elif location.file_stat is not None:
        if module.check_mode:
            result["changed"] = result["changed"] or _attributes_differ(location.file_stat, mode, uid, gid)
        else:
            result["changed"] = fix_attributes(location, mode, uid, gid) or result["changed"]
    return result


def main():
    run_module()


if __name__ == "__main__":
    main()
