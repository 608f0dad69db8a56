# -*- coding: utf-8 -*-
"""The gateway's backends: one per served name of the fleet (tiers on different models), and their checks."""

from __future__ import annotations

DOCUMENTATION = r"""
name: gateway_backends
short_description: The gateway's backends per served name, and the problems with them
description:
  - C(gateway_backends(servers, served_model_name, served_model_tiers)) lists one backend per served name of the
    fleet (C(fleet_served_names), served_model_name first, then each other tier's name), each a dict with the keys
    model, backend, unkeyed, tiers and servers. Its servers are those of I(servers) (C(gateway_servers)) whose
    served_model_name is that name.
  - C(gateway_backend_name(name, served_model_name)) is the contract's backend name of one served name (the vllm
    role drains its instances there).
  - C(gateway_tier_problems(servers, served_model_name, served_model_tiers, balance, group)) returns the messages
    (variable, problem, fix) for a tier nobody serves, a server nobody asks for, and two names with one backend.
"""

from ansible_collections.claude_vllm.fleet.plugins.module_utils.fleet_contract import (
    GATEWAY_UNKEYED_SUFFIX,
    _shorten,
    fleet_served_names,
    fleet_tier_names,
    gateway_backend_collisions,
    gateway_backend_name,
    served_model_name_problem,
    served_model_tiers_problems,
)


def _server_model(server, served_model_name):
    return server.get("served_model_name") or served_model_name


def gateway_backends(servers, served_model_name, served_model_tiers=None):
    """One backend per served name, served_model_name's first (the contract's GATEWAY_BACKEND)."""
    tiers = fleet_tier_names(served_model_name, served_model_tiers)
    backends = []
    for name in fleet_served_names(served_model_name, served_model_tiers):
        backend = gateway_backend_name(name, served_model_name)
        backends.append({
            "model": name,
            "backend": backend,
            "unkeyed": backend + GATEWAY_UNKEYED_SUFFIX,
            "tiers": [alias for alias, tier_name in tiers.items() if tier_name == name],
            "servers": [server for server in servers or [] if _server_model(server, served_model_name) == name],
        })
    return backends


def _described(backend):
    return f"{backend['model']} ({', '.join(backend['tiers'])})" if backend["tiers"] else backend["model"]


def gateway_tier_problems(servers, served_model_name, served_model_tiers=None, balance="affinity",
                          group="gpu_hosts"):
    """Each served name needs a server, each server a name the fleet asks for, each name its own backend."""
    if served_model_tiers_problems(served_model_tiers) or served_model_name_problem(served_model_name):
        return []  # the names themselves are wrong: the contract's rules name them (the gateway's preflight runs them)
    problems = []
    backends = gateway_backends(servers, served_model_name, served_model_tiers)
    names = [backend["model"] for backend in backends]
    for backend in backends:
        if backend["servers"] or not servers:
            continue  # no servers at all: the gateway's own check says the group is empty
        if backend["tiers"]:
            asked = (f"the tier{'s' if len(backend['tiers']) > 1 else ''} {', '.join(backend['tiers'])} "
                     f"(served_model_tiers) ask{'s' if len(backend['tiers']) == 1 else ''} for "
                     f"{backend['model']!r}")
        else:
            asked = (f"served_model_name {backend['model']!r} is what the gateway sends a request to when it cannot "
                     f"read its model (GET /v1/models, GET /health, a body whose \"model\" is beyond the first "
                     f"buffer)")
        problems.append(
            f"{asked}, but no vLLM instance of {group} (gateway_backend_group) serves it: the gateway's backend "
            f"{backend['backend']} would have no server and answer every such request 503. Fix: add an instance "
            f"with served_model_name: {backend['model']} to vllm_instances of a host of {group} (or change "
            f"served_model_tiers to a name an instance serves).")
    for server in servers or []:
        model = _server_model(server, served_model_name)
        if model not in names:
            problems.append(
                f"gateway server {server.get('name')} (host {server.get('host')}, vllm_instances "
                f"{server.get('instance')}) serves {_shorten(model)}, which none of the fleet's tiers asks for "
                f"(served_model_name and served_model_tiers give {', '.join(_described(b) for b in backends)}): "
                f"no request would ever reach it. Fix: set its served_model_name to one of "
                f"{', '.join(names)}, or give a tier that name in served_model_tiers (e.g. haiku: {model}).")
    reported = set()
    for backend, owners in gateway_backend_collisions(names, served_model_name, balance == "affinity"):
        if tuple(owners) in reported:
            continue  # the same two names' unkeyed twins: one message
        reported.add(tuple(owners))
        problems.append(
            f"served_model_tiers: the served names {' and '.join(repr(owner) for owner in owners)} would share the "
            f"gateway's backend {backend} (HAProxy allows only letters, digits and _ . : - in a backend name, "
            f"so '+' becomes '_'; with gateway_balance affinity each name also has a {GATEWAY_UNKEYED_SUFFIX} "
            f"backend): their requests would mix. Fix: rename one of the served names.")
    return problems


class FilterModule:
    def filters(self):
        return {
            "gateway_backends": gateway_backends,
            "gateway_backend_name": gateway_backend_name,
            "gateway_tier_problems": gateway_tier_problems,
        }
