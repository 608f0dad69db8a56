# -*- coding: utf-8 -*-
"""The options every module that speaks to HAProxy's runtime API takes (haproxy_map, haproxy_server)."""

from __future__ import annotations

from ansible_collections.claude_vllm.fleet.plugins.module_utils.fleet_contract import GATEWAY_ADMIN_SOCKET


class ModuleDocFragment:
    DOCUMENTATION = f"""
options:
  socket:
    description:
      - Path of the runtime API socket.
      - The default is the fleet contract's (the gateway role's C(gateway_admin_socket) default).
    type: path
    default: {GATEWAY_ADMIN_SOCKET}
  missing_ok:
    description:
      - Succeed without change when the socket, or what the task names through it (a map, a backend, a
        server), does not exist; a gateway not set up yet, or not yet listing a new server.
    type: bool
    default: false
"""
