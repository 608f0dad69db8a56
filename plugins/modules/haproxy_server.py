#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Drain, disable or enable a server of an HAProxy backend through the runtime API, and wait for it."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: haproxy_server
short_description: Set an HAProxy server's administrative state and wait for the result
description:
  - Talks to HAProxy's runtime API (the C(stats socket ... level admin) UNIX socket) with C(show stat) and
    C(set server BACKEND/SERVER state ...).
  - C(drain) stops new requests to the server and, with I(wait), waits until its current sessions are 0
    (requests already running finish), counting those of every server that tracks it (C(track BACKEND/SERVER);
    HAProxy applies the state to them too, e.g. the gateway's backend for requests without a session header).
    C(maint) also stops health checks. C(ready) puts it back and, with I(wait), waits until HAProxy's own health check reports it UP, so the caller knows traffic flows again.
  - Changed only when the administrative state differs. Check mode reports what would change.
options:
  backend:
    description: Backend name.
    type: str
    required: true
  server:
    description: Server name inside the backend.
    type: str
    required: true
  state:
    description: Wanted administrative state.
    type: str
    choices: [ready, drain, maint]
    required: true
  wait:
    description: Wait for sessions 0 (drain, maint) or for status UP (ready).
    type: bool
    default: true
  timeout:
    description: Seconds to wait before failing.
    type: int
    default: 600
extends_documentation_fragment:
  - claude_vllm.fleet.haproxy_runtime
author:
  - claude-vllm-fleet
"""

EXAMPLES = r"""
- name: Take gpu-01 out of the gateway, waiting for its requests to finish
  haproxy_server:
    backend: vllm
    server: gpu-01-main
    state: drain
    timeout: 900
  delegate_to: gateway-01

- name: Put it back and wait until the gateway's health check sees it UP
  haproxy_server:
    backend: vllm
    server: gpu-01-main
    state: ready
  delegate_to: gateway-01
"""

RETURN = r"""
status:
  description: HAProxy's status of the server at the end (UP, DOWN, DRAIN, MAINT, ...), or null when missing.
  returned: always
  type: str
sessions:
  description: Current sessions on the server at the end, with those of the servers that track it.
  returned: always
  type: int
waited:
  description: Seconds spent waiting.
  returned: always
  type: float
"""

import csv
import io
import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.claude_vllm.fleet.plugins.module_utils.fleet_contract import GATEWAY_ADMIN_SOCKET
from ansible_collections.claude_vllm.fleet.plugins.module_utils.haproxy_runtime import SOCKET_MISSING, RuntimeAPI

# HAProxy status text for each administrative state (show stat, column "status").
ADMIN_STATUS = {"drain": ("DRAIN",), "maint": ("MAINT",)}


def parse_stat(text):
    """Rows of `show stat` as dicts (the header line starts with '# ')."""
    text = text.lstrip()
    if text.startswith("# "):
        text = text[2:]
    return list(csv.DictReader(io.StringIO(text)))


def find_server(rows, backend, server):
    for row in rows:
        if row.get("pxname") == backend and row.get("svname") == server:
            return row
    return None


# srv_admin_state bits of `show servers state` (HAProxy's SRV_ADMF_*): forced / inherited / from
# configuration / resolution maintenance, forced / inherited drain, maintenance from a health check.
ADMIN_MAINT_BITS = 0x01 | 0x02 | 0x04 | 0x20 | 0x40
ADMIN_DRAIN_BITS = 0x08 | 0x10


def parse_servers_state(text):
    """Rows of `show servers state BACKEND` as dicts: a version line, a '# ' header, space-separated rows."""
    header = None
    rows = []
    for line in text.splitlines():
        if line.startswith("# "):
            header = line[2:].split()
        elif header and line.strip():
            rows.append(dict(zip(header, line.split())))
    return rows


def admin_state(admin_bits):
    """'ready', 'drain' or 'maint' from srv_admin_state (the status column cannot tell a DOWN server's)."""
    bits = int(admin_bits)
    if bits & ADMIN_MAINT_BITS:
        return "maint"
    if bits & ADMIN_DRAIN_BITS:
        return "drain"
    return "ready"


def sessions(row):
    try:
        return int(row.get("scur") or 0)
    except ValueError:
        return 0


def tracking_sessions(rows, backend, server):
    """Running requests on BACKEND/SERVER and on every server that tracks it, directly or through another
    (`show stat` column "tracked": BACKEND/SERVER): a drain or maintenance set on it applies to them too."""
    names = {"{}/{}".format(backend, server)}
    grown = True
    while grown:
        grown = False
        for row in rows:
            name = "{}/{}".format(row.get("pxname"), row.get("svname"))
            if row.get("tracked") in names and name not in names:
                names.add(name)
                grown = True
    return sum(sessions(row) for row in rows if "{}/{}".format(row.get("pxname"), row.get("svname")) in names)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            socket=dict(type="path", default=GATEWAY_ADMIN_SOCKET),
            backend=dict(type="str", required=True),
            server=dict(type="str", required=True),
            state=dict(type="str", required=True, choices=["ready", "drain", "maint"]),
            wait=dict(type="bool", default=True),
            timeout=dict(type="int", default=600),
            missing_ok=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    params = module.params
    api = RuntimeAPI(params["socket"], encoding="ascii")
    name = "{}/{}".format(params["backend"], params["server"])
    if not os.path.exists(params["socket"]):
        if params["missing_ok"]:
            module.exit_json(changed=False, status=None, sessions=0, waited=0.0,
                             msg="no HAProxy runtime socket at {}: gateway not set up yet".format(params["socket"]))
        module.fail_json(msg=SOCKET_MISSING.format(params["socket"]))

    def current():
        """The server's `show stat` row, its "sessions" those of the server and of the servers tracking it."""
        rows = parse_stat(api.command("show stat"))
        row = find_server(rows, params["backend"], params["server"])
        if row is not None:
            row = dict(row, scur=tracking_sessions(rows, params["backend"], params["server"]))
        return row

    def current_admin_state():
        for entry in parse_servers_state(api.command("show servers state {}".format(params["backend"]))):
            if entry.get("srv_name") == params["server"]:
                return admin_state(entry.get("srv_admin_state", "0"))
        return None

    row = current()
    if row is None:
        if params["missing_ok"]:
            module.exit_json(changed=False, status=None, sessions=0, waited=0.0,
                             msg="{} is not in this gateway's configuration (yet)".format(name))
        module.fail_json(msg="HAProxy has no server {}. Fix: run site.yml for the gateways so their configuration "
                             "lists every host of gpu_hosts.".format(name))
    changed = current_admin_state() != params["state"]
    if module.check_mode:
        module.exit_json(changed=changed, status=row.get("status"), sessions=sessions(row), waited=0.0)
    if changed:
        answer = api.command("set server {} state {}".format(name, params["state"])).strip()
        if answer:
            module.fail_json(msg="HAProxy refused 'set server {} state {}': {}".format(name, params["state"], answer))
    started = time.time()
    row = current()
    if params["wait"]:
        while True:
            row = current()
            if params["state"] == "ready":
                done = (row.get("status") or "").upper().startswith("UP")
            else:
                done = sessions(row) == 0
            if done:
                break
            if time.time() - started > params["timeout"]:
                what = ("the gateway's health check to report it UP (it is {}: check the server, its /v1/models "
                        "must list the served name)".format(row.get("status")) if params["state"] == "ready"
                        else "its {} running request(s) to finish".format(sessions(row)))
                module.fail_json(msg="Timed out after {} s waiting for {} on {}.".format(params["timeout"], what, name),
                                 changed=changed, status=row.get("status"), sessions=sessions(row))
            time.sleep(1)
    module.exit_json(changed=changed, status=row.get("status"), sessions=sessions(row),
                     waited=round(time.time() - started, 1))


if __name__ == "__main__":
    main()
