#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Make a running HAProxy's map hold exactly the given entries, atomically, through the runtime API."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: haproxy_map
short_description: Replace the entries of a loaded HAProxy map live, in one atomic commit
description:
  - Reads the map with C(show map) on HAProxy's runtime API (the C(stats socket ... level admin) UNIX
    socket). When its entries differ from O(entries), builds the new set in a new version of the map
    (C(prepare map), C(add map @VERSION)) and switches to it with C(commit map); requests see the old set
    or the new one, never a half-written or empty map. No reload, no restart, no connection dropped.
  - Used by the gateway role for the per-user token map (SHA-256 digest of each current user's token ->
    user name); a revoked user's token fails from the commit on.
  - The map file on disk is written separately (by a template) so that a restart loads the same set.
  - Check mode reports what would change.
options:
  map:
    description: The map's file name, exactly as the configuration loads it.
    type: path
    required: true
  entries:
    description: Wanted entries, key to value. Keys and values must not hold whitespace.
    type: dict
    required: true
extends_documentation_fragment:
  - claude_vllm.fleet.haproxy_runtime
author:
  - claude-vllm-fleet
"""

EXAMPLES = r"""
- name: Accept exactly the current users' tokens
  haproxy_map:
    map: /etc/haproxy/fleet-users.map
    entries:
      9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08: alice
"""

RETURN = r"""
added:
  description: Keys that were not in the map before.
  returned: always
  type: list
  elements: str
removed:
  description: Keys that are no longer in the map.
  returned: always
  type: list
  elements: str
version:
  description: The map version committed (absent when nothing changed).
  returned: when changed and not in check mode
  type: str
"""

import os
import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.claude_vllm.fleet.plugins.module_utils.fleet_contract import GATEWAY_ADMIN_SOCKET
from ansible_collections.claude_vllm.fleet.plugins.module_utils.haproxy_runtime import SOCKET_MISSING, RuntimeAPI

WORD = re.compile(r"\S+")


class MapError(Exception):
    pass


def parse_show_map(text):
    """`show map FILE` lines are '<reference> <key> <value>'; returns {key: value}."""
    entries = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[0].startswith("0x"):
            entries[fields[1]] = fields[2]
        elif line.strip() and not fields[0].startswith("0x"):
            raise MapError(line.strip())
    return entries


def replace_map(api, path, entries):
    """Prepare a new version holding `entries`, then commit it. Returns the version."""
    answer = api.command("prepare map {}".format(path)).strip()
    match = re.search(r"New version created:\s*(\d+)", answer)
    if not match:
        raise MapError("prepare map {}: {}".format(path, answer))
    version = match.group(1)
    for key, value in sorted(entries.items()):
        answer = api.command("add map @{} {} {} {}".format(version, path, key, value)).strip()
        if answer:
            raise MapError("add map {} {}: {}".format(path, key, answer))
    answer = api.command("commit map @{} {}".format(version, path)).strip()
    if answer:
        raise MapError("commit map {}: {}".format(path, answer))
    return version


def main():
    module = AnsibleModule(
        argument_spec=dict(
            socket=dict(type="path", default=GATEWAY_ADMIN_SOCKET),
            map=dict(type="path", required=True),
            entries=dict(type="dict", required=True),
            missing_ok=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    params = module.params
    wanted = {str(k): str(v) for k, v in params["entries"].items()}
    bad = [k for k, v in wanted.items() if not WORD.fullmatch(k) or not WORD.fullmatch(v)]
    if bad:
        module.fail_json(msg="haproxy_map: keys and values must be single words; bad: {}".format(", ".join(bad)))
    if not os.path.exists(params["socket"]):
        if params["missing_ok"]:
            module.exit_json(changed=False, added=[], removed=[],
                             msg="no HAProxy runtime socket at {}: it loads the map file when it starts".format(
                                 params["socket"]))
        module.fail_json(msg=SOCKET_MISSING.format(params["socket"]))
    api = RuntimeAPI(params["socket"])
    try:
        current = parse_show_map(api.command("show map {}".format(params["map"])))
    except (OSError, MapError) as exc:
        module.fail_json(msg="haproxy_map: cannot read map {} from HAProxy ({}). Fix: check that the running "
                             "configuration loads this map file.".format(params["map"], exc))
    added = sorted(set(wanted) - set(current))
    removed = sorted(set(current) - set(wanted))
    changed = bool(added or removed or any(current[k] != wanted[k] for k in set(wanted) & set(current)))
    result = dict(changed=changed, added=added, removed=removed)
    if changed and not module.check_mode:
        try:
            result["version"] = replace_map(api, params["map"], wanted)
        except (OSError, MapError) as exc:
            module.fail_json(msg="haproxy_map: updating {} failed ({}); the previous set is still in use.".format(
                params["map"], exc), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
