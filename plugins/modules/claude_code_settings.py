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
  - Safe as root in a user's home. When the module runs as root and O(owner) is another user,
    every read, write, rename, backup and prune happens in a child process that has dropped to
    that user's own credentials (uid, gid and groups), so the module can do nothing in the home
    that the user could not do themselves. On top of that, the settings file and its directory
    must be owned by O(owner); a file moved or hard-linked in from elsewhere, or a link leading
    out of what the user owns, is refused, named and left untouched. A link the user made into
    their own files (a dotfiles manager's) is followed and left in place.
  - The file is opened without following a link and without blocking (a FIFO or socket is
    refused at once), its owner, type and size are checked on the opened descriptor, and that
    descriptor is the one read; a file over O(max_bytes) is refused before it is read. Every
    write goes through the opened directory into a new file that is renamed over the old name.
  - The diff shows the managed keys only; every other value is masked, and a file that is not
    valid JSON is never shown.
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
    description:
      - Copy the previous file to C(PATH.YYYYmmddTHHMMSS.bak) before changing its content.
      - Backups are always mode C(0600), owned by O(owner) and O(group), whatever O(mode) is
        (a machine policy file is world-readable, its backups holding old tokens are not).
    type: bool
    default: true
  backup_keep:
    description:
      - How many backups of this file to keep; older ones are removed (only regular files named
        like this module's backups and owned by O(owner)). C(0) keeps them all.
      - Kept backups that are not C(0600) yet are made so.
    type: int
    default: 3
  max_bytes:
    description: A settings file larger than this is refused before it is read.
    type: int
    default: 1048576
  timeout:
    description:
      - Seconds the child process running as O(owner) may take. The user can stop that process
        (it runs with their credentials); past this it is killed and the task fails for this file.
    type: int
    default: 60
  on_invalid_json:
    description:
      - What to do when the existing file is not a JSON object.
      - C(fail) stops with an error naming the file and the parse error; nothing is changed.
      - C(backup_and_replace) keeps a copy of the broken file as a backup and starts from an empty object.
    type: str
    choices: [fail, backup_and_replace]
    default: fail
extends_documentation_fragment:
  - claude_vllm.fleet.full_check_mode
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
pruned_backups:
  description: Old backups removed to keep O(backup_keep).
  returned: always
  type: list
  elements: str
ran_as:
  description: The account whose credentials did the work (O(owner) when the module ran as root for another user).
  returned: always
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
import re
import select
import signal
import stat
import time

from ansible.module_utils.basic import AnsibleModule

SECRET_MASK = "********"
HIDDEN = "(not managed by the fleet: not shown)"
DIRECTORY_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
# Never follow a link, never wait for a FIFO's writer: the type is checked on the descriptor.
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
BACKUP_MODE = 0o600
URL_USERINFO = re.compile(r"(//)[^/@\s]*@")
UNSAFE_FIX = ("Nothing was read or changed. Fix: make the settings file (and its directory) a regular file "
              "(directory) owned by the user, or point the link at one the user owns.")


class Refusal(Exception):
    """This file cannot be managed; the message names it, the problem and the fix."""


class UnsafePath(Refusal):
    """The settings path leads somewhere the module must not read or write for this user."""

    def __init__(self, message):
        super().__init__(f"{message}. {UNSAFE_FIX}")


class MissingDirectory(Refusal):
    """The settings file's directory does not exist and may not be created."""


class InvalidSettings(Exception):
    """The existing file is not a JSON object with an object under env."""


class Request:
    """What one run is asked to do, resolved before any file is touched."""

    def __init__(self, params, check_mode, diff, uid, gid, mode, dir_mode, user):
        self.path = params["path"]
        self.model = params["model"]
        self.env = params["env"]
        self.secret_env = params["secret_env"]
        self.remove_env = params["remove_env"]
        self.backup = params["backup"]
        self.backup_keep = params["backup_keep"]
        self.max_bytes = params["max_bytes"]
        self.on_invalid_json = params["on_invalid_json"]
        self.check_mode, self.diff = check_mode, diff
        self.uid, self.gid, self.mode, self.dir_mode = uid, gid, mode, dir_mode
        # The uid every file and directory on the way must belong to.
        self.trusted_uid = uid if uid != -1 else os.geteuid()
        self.user = user  # shown in messages: "alice (uid 1001)"


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


# --------------------------------------------------------------------------- running as the user
def drop_privileges(uid, gid):
    """Become `uid` with its primary group `gid` and its supplementary groups, for good."""
    try:
        groups = os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)
    except KeyError:
        groups = [gid]
    os.setgroups(groups)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    os.umask(0o077)


def run_as_user(uid, gid, work, timeout, user):
    """Run work() in a child process with the user's own credentials and return what it returned.

    Whatever the child does in the user's home, the user could have done: a link, a moved-in
    file or a race can no longer make root read, change or chown what the user does not own.
    Refusal raised in the child is raised again here; the child never prints (stdout is the
    module's) and never runs the parent's clean-up (os._exit). The user may stop that process
    (it is theirs): past `timeout` seconds it is killed and the run fails for this file.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        status = 1
        try:
            os.close(read_fd)
            try:
                drop_privileges(uid, gid)
                payload = {"done": work()}
            except Refusal as exc:
                payload = {"refused": str(exc)}
            except Exception as exc:  # pylint: disable=broad-except  # reported, never a traceback
                payload = {"refused": f"{type(exc).__name__}: {exc}"}
            view = memoryview(json.dumps(payload).encode("utf-8"))
            while view:
                view = view[os.write(write_fd, view):]
            status = 0
        finally:
            os._exit(status)  # pylint: disable=protected-access
    os.close(write_fd)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                os.kill(pid, signal.SIGKILL)
                raise Refusal(f"the work done as {user} did not finish within {timeout} s (a process running as "
                              f"the user can be stopped by the user). It was killed; the file may be unchanged. "
                              f"Fix: run again; raise claude_code_settings_timeout if the disk is that slow")
            if select.select([read_fd], [], [], remaining)[0]:
                chunk = os.read(read_fd, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)
    try:
        payload = json.loads(b"".join(chunks).decode("utf-8"))
    except ValueError:
        raise Refusal(f"the work done as {user} ended without a result (the process was killed). "
                      f"Fix: run again") from None
    if "refused" in payload:
        raise Refusal(payload["refused"])
    return payload["done"]


# --------------------------------------------------------------------------- finding and reading
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


def _owner_of(dir_fd, name):
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_uid
    except OSError:
        return None


def _open_directory(directory, request, link=None):
    """Open `directory` (links followed) and refuse it unless the trusted user owns it."""
    try:
        dir_fd = os.open(directory, DIRECTORY_FLAGS)
    except NotADirectoryError:
        raise UnsafePath(f"{directory} is not a directory (a regular file or a link to one)") from None
    except FileNotFoundError:
        raise UnsafePath(f"{link or directory} is a link to {os.path.realpath(directory)}, which does "
                         f"not exist (a dangling link)") from None
    except PermissionError:
        try:
            owner = f"owned by uid {os.stat(directory).st_uid}"
        except OSError:
            owner = "not theirs"
        if link is not None:
            raise UnsafePath(f"{link} is a link into {os.path.realpath(directory)}, a directory {request.user} "
                             f"cannot open ({owner})") from None
        raise UnsafePath(f"{directory} cannot be opened by {request.user} ({owner})") from None
    owner = os.fstat(dir_fd).st_uid
    if owner != request.trusted_uid:
        os.close(dir_fd)
        if link is not None:
            raise UnsafePath(f"{link} is a link into {os.path.realpath(directory)}, a directory owned by uid "
                             f"{owner}, not by the settings file's owner {request.user}")
        raise UnsafePath(f"{directory} is owned by uid {owner}, not by the settings file's owner {request.user}")
    return dir_fd


def _settle_directory(location, directory, request):
    """Open the settings directory, creating it or fixing its owner and mode when `dir_mode` is given."""
    try:
        before = os.lstat(directory)
    except FileNotFoundError:
        if request.dir_mode is None:
            if request.check_mode:
                return
            raise MissingDirectory(f"directory {directory} does not exist. Fix: create it first, or set "
                                   "directory_mode to let the module create it") from None
        location.directory_changed = True
        if request.check_mode:
            return
        parent = os.path.dirname(directory)
        try:
            os.mkdir(directory, 0o700)
        except FileNotFoundError:
            raise MissingDirectory(f"{parent} does not exist, so {directory} cannot be "
                                   "created. Fix: create the user's home directory first") from None
        except PermissionError:
            raise MissingDirectory(f"{directory} cannot be created: {parent} is not writable by {request.user}. "
                                   f"Fix: give the user their home directory ({parent})") from None
        before = os.lstat(directory)
    if stat.S_ISLNK(before.st_mode):
        # A link the user made (a dotfiles manager): followed only into a directory the owner owns,
        # and left as it is.
        location.dir_fd = _open_directory(directory, request, link=directory)
        location.real_path = os.path.join(os.path.realpath(directory), location.name)
        return
    if not stat.S_ISDIR(before.st_mode):
        raise UnsafePath(f"{directory} is {_kind(before.st_mode)}, not a directory")
    location.dir_fd = _open_directory(directory, request)
    opened = os.fstat(location.dir_fd)
    if (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino):
        raise UnsafePath(f"{directory} was replaced while it was being opened")
    if request.dir_mode is None:
        return
    if _attributes_differ(opened, request.dir_mode, request.uid, request.gid):
        location.directory_changed = True
        if not request.check_mode:
            _set_attributes(location.dir_fd, request.dir_mode, request.uid, request.gid)


def _read_capped(fd, path, limit):
    chunks, total = [], 0
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            raise Refusal(f"{path} grew past {limit} bytes while it was being read. Nothing was changed. "
                          f"Fix: a Claude Code settings file is a few KiB; shrink it")


def _open_file(location, request, followed):
    """Read the file named `location.name` in the open directory without following a link.

    Returns True when the name is a link (the caller decides), False otherwise.
    """
    try:
        fd = os.open(location.name, FILE_FLAGS, dir_fd=location.dir_fd)
    except FileNotFoundError:
        return False
    except PermissionError:
        owner = _owner_of(location.dir_fd, location.name)
        if owner is not None and owner != request.trusted_uid:
            raise UnsafePath(f"{location.real_path} is owned by uid {owner}, not by {request.user}, who cannot "
                             f"read it (a file moved in from elsewhere)") from None
        raise UnsafePath(f"{location.real_path} cannot be read by {request.user}, its owner. Fix: chmod u+r "
                         f"{location.real_path}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return True
        if exc.errno == errno.ENXIO:  # a socket cannot be opened
            raise UnsafePath(f"{location.real_path} is "
                             f"{_kind(os.stat(location.name, dir_fd=location.dir_fd, follow_symlinks=False).st_mode)}"
                             ) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePath(f"{location.real_path} is {_kind(info.st_mode)}")
        if info.st_uid != request.trusted_uid:
            if followed:
                raise UnsafePath(f"{location.path} is a link to {location.real_path}, a file owned by uid "
                                 f"{info.st_uid}, not by the settings file's owner {request.user}")
            if info.st_nlink > 1:
                raise UnsafePath(f"{location.real_path} is a hard link to a file owned by uid {info.st_uid}, "
                                 f"not by {request.user}")
            raise UnsafePath(f"{location.real_path} is owned by uid {info.st_uid}, not by {request.user} "
                             f"(a file moved in from elsewhere)")
        if info.st_size > request.max_bytes:
            raise Refusal(f"{location.real_path} is {info.st_size} bytes, over the {request.max_bytes}-byte limit "
                          f"for a settings file; it was not read and nothing was changed. Fix: a Claude Code "
                          f"settings file is a few KiB: remove what does not belong in it, or raise "
                          f"claude_code_settings_max_bytes")
        location.raw, location.file_stat = _read_capped(fd, location.real_path, request.max_bytes), info
    finally:
        os.close(fd)
    return False


def locate_settings(request):
    """Find, check and read the settings file; see SettingsLocation. Raises Refusal.

    The file's directory and the file must belong to the trusted user (the owner), so a link,
    a moved-in file or a hard link cannot lead the module to another file. A link the user made
    is followed (dotfiles managers keep working) and left in place; the file it points to is
    the one updated.
    """
    path = request.path
    location = SettingsLocation(path)
    try:
        _settle_directory(location, os.path.dirname(path) or ".", request)
        if location.dir_fd is None:
            return location
        if _open_file(location, request, followed=False):
            target = os.path.realpath(path)
            location.close()
            location.real_path, location.name = target, os.path.basename(target)
            location.dir_fd = _open_directory(os.path.dirname(target), request, link=path)
            if _open_file(location, request, followed=True):
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
        raise InvalidSettings(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not text.strip():
        return {}, text
    try:
        settings = json.loads(text)
    except RecursionError:
        raise InvalidSettings(f"{path} is nested too deeply to be a settings file") from None
    except ValueError as exc:
        raise InvalidSettings(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(settings, dict):
        raise InvalidSettings(f"{path} holds a JSON {type(settings).__name__}, not an object")
    if not isinstance(settings.get("env", {}), dict):
        raise InvalidSettings(f"{path}: 'env' is a {type(settings['env']).__name__}, not an object")
    return settings, text


# --------------------------------------------------------------------------- merging and showing
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


def diff_view(settings, model_managed, shown_env, secret_names, tag=""):
    """What a diff may show of `settings`: the managed keys; every other value is masked.

    The user's own values (a GITHUB_TOKEN in env, a removed ANTHROPIC_API_KEY, hooks) never
    reach Ansible's output; managed secrets show as the mask (with "(old)"/"(new)" when they
    rotate), and credentials in a managed URL are cut out.
    """
    shown = {}
    for key, value in settings.items():
        if key == "model" and model_managed and isinstance(value, str):
            shown[key] = value
        elif key == "env" and isinstance(value, dict):
            shown[key] = {}
            for name, item in value.items():
                if name in secret_names:
                    shown[key][name] = SECRET_MASK + tag
                elif name in shown_env and isinstance(item, str):
                    shown[key][name] = URL_USERINFO.sub(r"\1****@", item)
                else:
                    shown[key][name] = HIDDEN
        else:
            shown[key] = HIDDEN
    return shown


# --------------------------------------------------------------------------- writing
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


def _exists(dir_fd, name):
    try:
        os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


def backup_name(dir_fd, name):
    stamp = time.strftime("%Y%m%dT%H%M%S")
    candidate, counter = f"{name}.{stamp}.bak", 1
    while _exists(dir_fd, candidate):
        candidate, counter = f"{name}.{stamp}-{counter}.bak", counter + 1
    return candidate


def make_backup(location, uid, gid):
    """Keep what was read (and checked) as a new 0600 file next to the managed one.

    The backup is a copy of the bytes already read from the checked descriptor, never a rename
    of whatever the name points to by now: a file swapped in after the checks is not touched.
    """
    destination = backup_name(location.dir_fd, location.name)
    _create_exclusive(location.dir_fd, destination, location.raw, BACKUP_MODE, uid, gid)
    return os.path.join(os.path.dirname(location.real_path), destination)


def _fix_attributes_of(location, name, expected, mode, uid, gid):
    """Set mode and owner of `name`, opened without following links, if it is still `expected`."""
    fd = os.open(name, FILE_FLAGS, dir_fd=location.dir_fd)
    try:
        current = os.fstat(fd)
        if (current.st_dev, current.st_ino) != (expected.st_dev, expected.st_ino):
            raise UnsafePath(f"{os.path.join(os.path.dirname(location.real_path), name)} was replaced while it "
                             f"was being updated")
        _set_attributes(fd, mode, uid, gid)
    finally:
        os.close(fd)


def fix_attributes(location, mode, uid, gid):
    """Set owner and mode of the unchanged file. Returns whether it changed."""
    if not _attributes_differ(location.file_stat, mode, uid, gid):
        return False
    _fix_attributes_of(location, location.name, location.file_stat, mode, uid, gid)
    return True


def _own_backups(location, trusted_uid):
    """This file's backups in its directory, oldest first: regular files owned by `trusted_uid`."""
    pattern = re.compile(re.escape(location.name) + r"\.(\d{8}T\d{6})(?:-(\d+))?\.bak")
    found = []
    for entry in os.listdir(location.dir_fd):
        match = pattern.fullmatch(entry)
        if not match:
            continue
        try:
            info = os.stat(entry, dir_fd=location.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if stat.S_ISREG(info.st_mode) and info.st_uid == trusted_uid:
            found.append((match.group(1), int(match.group(2) or 0), entry, info))
    return sorted(found)


def tidy_backups(location, request):
    """Remove backups beyond `backup_keep` (oldest first) and make the kept ones 0600. Returns what changed."""
    found = _own_backups(location, request.trusted_uid)
    excess = found[:-request.backup_keep] if 0 < request.backup_keep < len(found) else []
    kept = found[len(excess):]
    directory = os.path.dirname(location.real_path)
    pruned = [os.path.join(directory, entry) for _stamp, _count, entry, _info in excess]
    loose = [(entry, info) for _stamp, _count, entry, info in kept
             if _attributes_differ(info, BACKUP_MODE, request.uid, request.gid)]
    if not request.check_mode:
        for _stamp, _count, entry, _info in excess:
            os.unlink(entry, dir_fd=location.dir_fd)
        for entry, info in loose:
            _fix_attributes_of(location, entry, info, BACKUP_MODE, request.uid, request.gid)
    return pruned, bool(loose)


# --------------------------------------------------------------------------- the module
def manage(request):
    """Everything done to the file system for one settings file; runs as the owner when root runs the module."""
    location = SettingsLocation(request.path)
    try:
        location = locate_settings(request)
        return run_merge(request, location)
    except OSError as exc:
        where = exc.filename if isinstance(exc.filename, str) and exc.filename.startswith("/") else location.real_path
        raise Refusal(f"{where}: {exc.strerror or exc}; the file was not updated. Fix: make "
                      f"{os.path.dirname(location.real_path)} a directory that {request.user} owns and can "
                      f"write, holding a regular settings file of theirs, then run again") from None
    finally:
        location.close()


def run_merge(request, location):
    path = location.path
    result = dict(created=location.raw is None, changed=location.directory_changed, pruned_backups=[])
    warnings = []
    if location.real_path != path:
        result["followed_link_to"] = location.real_path
    replace_invalid = False
    try:
        current, old_text = parse_settings(location.real_path, location.raw)
    except InvalidSettings as exc:
        if request.on_invalid_json == "fail":
            raise Refusal(f"{exc}. It was left untouched. Fix: repair the JSON by hand, or set "
                          f"claude_code_invalid_json: backup_and_replace to keep it as a backup and start "
                          f"fresh.") from None
        current, old_text, replace_invalid = {}, None, True
        warnings.append(f"{exc}; it is kept as a backup and replaced")

    merged, updated, removed = merge_settings(
        current, request.model, request.env, request.secret_env, request.remove_env)
    result.update(updated_keys=updated, removed_keys=removed)
    content_changed = replace_invalid or old_text is None or merged != current
    if removed:
        warnings.append(f"{path}: removed {', '.join(removed)}: they contradict the fleet's Claude Code setup")

    if request.diff:
        secrets = list(request.secret_env)
        secret_changed = any(f"env.{name}" in updated for name in secrets)
        view = (request.model is not None, set(request.env), secrets)
        if replace_invalid:
            before_text = f"(not valid JSON, {len(location.raw)} bytes: not shown)\n"
        else:
            before_text = "" if old_text is None else render(
                diff_view(current, *view, tag=" (old)" if secret_changed else ""))
        result["diff"] = dict(
            before=before_text, after=render(diff_view(merged, *view, tag=" (new)" if secret_changed else "")),
            before_header=location.real_path, after_header=location.real_path)

    if content_changed:
        result["changed"] = True
        if not request.check_mode:
            if location.raw is not None and (request.backup or replace_invalid):
                result["backup_file"] = make_backup(location, request.uid, request.gid)
            write_atomically(location.dir_fd, location.name, render(merged), request.mode, request.uid, request.gid)
    elif location.file_stat is not None:
        if request.check_mode:
            result["changed"] = result["changed"] or _attributes_differ(
                location.file_stat, request.mode, request.uid, request.gid)
        else:
            result["changed"] = fix_attributes(location, request.mode, request.uid, request.gid) or result["changed"]
    if location.dir_fd is not None:
        result["pruned_backups"], loose = tidy_backups(location, request)
        result["changed"] = result["changed"] or loose or bool(result["pruned_backups"])
    return dict(result=result, warnings=warnings)


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


def describe_user(uid):
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


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
            backup_keep=dict(type="int", default=3),
            max_bytes=dict(type="int", default=1048576),
            timeout=dict(type="int", default=60),
            on_invalid_json=dict(type="str", choices=["fail", "backup_and_replace"], default="fail"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    for option, lowest in (("backup_keep", 0), ("max_bytes", 1), ("timeout", 1)):
        if params[option] < lowest:
            module.fail_json(msg=f"claude_code_settings: {option} must be at least {lowest}, not {params[option]}")
    mode = parse_mode(module, params["mode"])
    dir_mode = None if params["directory_mode"] is None else parse_mode(
        module, params["directory_mode"], "directory_mode")
    uid, gid = resolve_ids(module, params["owner"], params["group"])
    request = Request(params, module.check_mode, module._diff, uid, gid, mode, dir_mode,
                      describe_user(uid if uid != -1 else os.geteuid()))
    result = dict(changed=False, path=request.path, created=False, updated_keys=[], removed_keys=[],
                  pruned_backups=[], ran_as=request.user)
    act_as_owner = os.geteuid() == 0 and uid not in (-1, 0)
    try:
        if act_as_owner:
            try:
                primary_gid = pwd.getpwuid(uid).pw_gid
            except KeyError:
                primary_gid = gid if gid != -1 else uid
            done = run_as_user(uid, primary_gid, lambda: manage(request), params["timeout"], request.user)
        else:
            done = manage(request)
    except Refusal as exc:
        module.fail_json(msg=f"claude_code_settings: {exc}", **result)
    for warning in done["warnings"]:
        module.warn(warning)
    result.update(done["result"])
    module.exit_json(**result)


def main():
    run_module()


if __name__ == "__main__":
    main()
