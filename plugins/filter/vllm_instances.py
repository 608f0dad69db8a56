# -*- coding: utf-8 -*-
"""Normalisation and checks of the vllm role's instance list."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

DOCUMENTATION = r"""
name: vllm_instances
short_description: Normalise and check vllm_instances
description:
  - C(vllm_normalize_instances) fills each instance with the role-wide defaults and adds its unit name.
  - C(vllm_instance_problems) returns a list of messages (variable, problem, fix) for bad instances.
  - C(fleet_tier_problems) returns a message for each tier of served_model_tiers whose served name no vLLM
    instance of any GPU host serves (empty without tiers).
"""

from ansible_collections.claude_vllm.fleet.plugins.module_utils.fleet_contract import (
    DEFAULT_INSTANCE,
    fleet_served_names,
    fleet_tier_names,
    gateway_server_name,
    served_model_name_problem,
    served_model_tiers_problems,
)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def vllm_normalize_instances(instances, port=8000, model="", tensor_parallel_size=1, tool_call_parser="",
                             served_model_name=""):
    normalized = []
    for item in instances or []:
        entry = dict(item) if isinstance(item, dict) else {"name": item}
        entry.setdefault("port", port)
        entry.setdefault("model", model)
        if entry.get("served_model_name") in (None, ""):
            entry["served_model_name"] = served_model_name
        entry.setdefault("tensor_parallel_size", tensor_parallel_size)
        entry.setdefault("tool_call_parser", tool_call_parser)
        entry.setdefault("cuda_visible_devices", "")
        entry.setdefault("extra_args", [])
        entry.setdefault("extra_env", {})
        entry["unit"] = f"vllm-{entry.get('name')}.service"
        normalized.append(entry)
    return normalized


def _port_problem(instance):
    port = instance.get("port")
    try:
        number = int(port)
    except (TypeError, ValueError):
        number = None
    if number is None or not 1 <= number <= 65535 or str(port).strip() != str(number):
        return (f"vllm_instances[{instance.get('name')}].port / vllm_port ({port!r}) must be a TCP port between "
                f"1 and 65535. Fix: use e.g. 8000 (and keep anthropic_base_url on the same port).")
    return ""


def _tier_listing(served_model_name, served_model_tiers):
    """'Qwen3.5-27B' (opus, sonnet), 'Qwen3-4B' (haiku): each served name the fleet asks for, with its tiers."""
    by_name = {}
    for alias, name in fleet_tier_names(served_model_name, served_model_tiers).items():
        by_name.setdefault(name, []).append(alias)
    return ", ".join(f"{name!r} ({', '.join(aliases)})" for name, aliases in by_name.items())


def _served_name_problem(instance, served_model_name, served_model_tiers):
    """An instance must serve one of the names the fleet's tiers ask for: any other name gets no request."""
    if served_model_name is None or served_model_name_problem(served_model_name) \
            or served_model_tiers_problems(served_model_tiers):
        return ""  # the contract's rules name the shared variables' own problems
    served = instance.get("served_model_name") or served_model_name  # normalised: the shared one by default
    if served in fleet_served_names(served_model_name, served_model_tiers):
        return ""
    return (f"vllm_instances[{instance.get('name')}].served_model_name ({served!r}) is none of the names the "
            f"fleet's tiers ask for: {_tier_listing(served_model_name, served_model_tiers)} (served_model_name and "
            f"served_model_tiers, shared): no Claude Code request names it, so the gateway would send it none and "
            f"the GPUs it holds would serve nothing. Fix: leave it out (the instance serves served_model_name), "
            f"set it to one of those names, or give a tier that name in served_model_tiers (group_vars/all), "
            f"e.g. served_model_tiers: {{haiku: {served}}}.")


def vllm_instance_problems(instances, tool_calling=True, served_model_name=None, served_model_tiers=None):
    """tool_calling: vllm_enable_tool_calling (without it no instance needs a parser). served_model_name and
    served_model_tiers (the shared variables): when given, each instance's served_model_name must be one of
    the names the fleet's tiers ask for (fleet_served_names)."""
    problems = []
    if not instances:
        return ["vllm_instances is empty: nothing would serve served_model_name. Fix: keep at least one instance."]
    names, ports = set(), set()
    for instance in instances:
        name = instance.get("name")
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            problems.append(f"vllm_instances: name {name!r} must be letters, digits, '.', '_' or '-' (it becomes "
                            f"the unit vllm-<name>.service). Fix: rename it, e.g. '{DEFAULT_INSTANCE}'.")
        elif name in names:
            problems.append(f"vllm_instances: name {name!r} is used twice. Fix: give each instance its own name.")
        names.add(name)
        port_problem = _port_problem(instance)
        if port_problem:
            problems.append(port_problem)
        elif int(instance["port"]) in ports:
            problems.append(f"vllm_instances: port {instance['port']} is used by two instances. Fix: one port each.")
        else:
            ports.add(int(instance["port"]))
        if not instance.get("model"):
            problems.append(f"vllm_instances[{name}]: no model. Fix: set vllm_model or the instance's model.")
        if not isinstance(instance.get("extra_args"), list) or not all(
                isinstance(arg, (str, int, float)) for arg in instance.get("extra_args")):
            problems.append(f"vllm_instances[{name}].extra_args must be a list of strings.")
        parser = instance.get("tool_call_parser")
        if tool_calling and (not isinstance(parser, str) or not parser or parser.split() != [parser]):
            problems.append(f"vllm_instances[{name}].tool_call_parser ({parser!r}) must be one vLLM "
                            f"--tool-call-parser name, e.g. qwen3_coder or hermes. Fix: set it, or leave it out "
                            f"to use vllm_tool_call_parser.")
        if not isinstance(instance.get("extra_env"), dict):
            problems.append(f"vllm_instances[{name}].extra_env must be a mapping of variable names to strings.")
        problems.append(_served_name_problem(instance, served_model_name, served_model_tiers))
    return [problem for problem in problems if problem]


def fleet_tier_problems(hostvars, hosts, served_model_name, served_model_tiers=None, groups=None, this_host=None,
                        this_names=None, group="gpu_hosts"):
    """A message for each served name of the fleet's tiers that no vLLM instance of `hosts` (the GPU hosts) serves.

    Empty without tiers (served_model_tiers empty: every instance serves served_model_name, as before), when
    the shared variables are themselves wrong (their own rules name them) and when `hosts` is empty (the
    servers are not in this inventory). An instance serves its own served_model_name, else its host's
    served_model_name; a multi-node instance counts on its leader (gateway_servers). this_host and
    this_names: the host running the check and the names its own instances serve (from its normalised
    instances, which may come from the play rather than the inventory).
    """
    if not served_model_tiers or served_model_tiers_problems(served_model_tiers) \
            or served_model_name_problem(served_model_name):
        return []
    servers = {}
    for server in gateway_servers(hostvars, [host for host in hosts or [] if host != this_host], groups=groups,
                                  served_model_name=served_model_name):
        name = server["served_model_name"]
        servers.setdefault(name, []).append(server["name"])
    if this_host is not None:
        for name in this_names or []:
            servers.setdefault(name or served_model_name, []).append(this_host)
    if not servers:
        return []
    by_name = {}
    for alias, name in fleet_tier_names(served_model_name, served_model_tiers).items():
        by_name.setdefault(name, []).append(alias)
    serving = "; ".join(f"{name!r} on {', '.join(sorted(set(where)))}" for name, where in sorted(servers.items()))
    problems = []
    for name, aliases in by_name.items():
        if name in servers:
            continue
        tiers = ", ".join(aliases)
        source = ("served_model_name" if name == served_model_name
                  else " and ".join(f"served_model_tiers.{alias}" for alias in aliases))
        problems.append(
            f"{source}: the {tiers} tier{'s' if len(aliases) > 1 else ''} ask{'' if len(aliases) > 1 else 's'} for "
            f"{name!r}, but no vLLM instance of any host of {group} serves it (they serve {serving}): every "
            f"{tiers}-tier request of Claude Code would fail (\"There's an issue with the selected model\"). Fix: "
            f"add an instance with served_model_name: {name} to vllm_instances of the GPU host that runs that model "
            f"(in the inventory, host_vars or group_vars, not only in a play), or "
            + (f"remove {tiers} from served_model_tiers." if name != served_model_name
               else "set served_model_name to a name an instance serves."))
    return problems


def fleet_tier_routing_problem(groups, hostvars, anthropic_base_url, served_model_name, served_model_tiers=None):
    """A message when tiers have names of their own but Claude Code's one base URL is a vLLM server itself.

    Claude Code sends every tier's requests to anthropic_base_url, and one vLLM server answers one served name:
    the tiers need something that routes by the request's model, the fleet's gateway (or a router of the
    operator's own, at a base URL that is none of the GPU hosts). Empty without tiers of their own, with a
    gateway in the inventory, or when the base URL's host is not a GPU host.
    """
    names = fleet_served_names(served_model_name, served_model_tiers if isinstance(served_model_tiers, dict) else {})
    groups = groups or {}
    if len(names) < 2 or groups.get("gateways"):
        return ""
    host = (urlsplit(str(anthropic_base_url or "")).hostname or "").lower()
    gpu_hosts = list(groups.get("gpu_hosts") or [])
    addresses = {}
    for gpu_host in gpu_hosts:
        values = hostvars[gpu_host] if gpu_host in hostvars else {}
        get = values.get if hasattr(values, "get") else (lambda key, default=None: default)
        for address in (gpu_host, get("ansible_host", None)):
            if address:
                addresses[str(address).lower()] = gpu_host
        if gpu_host in ("localhost", "127.0.0.1") or str(get("ansible_host", "")) in ("localhost", "127.0.0.1"):
            addresses.update({"localhost": gpu_host, "127.0.0.1": gpu_host, "::1": gpu_host})
    if host not in addresses:
        return ""
    tiers = fleet_tier_names(served_model_name, served_model_tiers)
    own = ", ".join(f"{alias} {name!r}" for alias, name in tiers.items() if name != served_model_name)
    return (f"served_model_tiers gives tiers served names of their own ({own}; the others {served_model_name!r}), "
            f"but anthropic_base_url ({anthropic_base_url}) is the GPU host {addresses[host]} itself and the inventory "
            f"has no gateway: Claude Code sends every tier to that one URL, and a vLLM server answers only the name "
            f"it serves, so the other tiers' requests would fail (\"There's an issue with the selected model\"). "
            f"Fix: add a host to the gateways group (it routes each request by its model to the servers of that "
            f"name), or set anthropic_base_url to a router of your own, or leave served_model_tiers empty.")


def vllm_missing_model_problem(path, host):
    return (f"vllm_model: the local model directory {path} does not exist on {host}. "
            f"Fix: copy the model there first, or use a Hugging Face id (e.g. Qwen/Qwen3.5-27B).")


def gateway_servers(hostvars, hosts, default_port=8000, groups=None, served_model_name=""):
    """The servers a gateway sends requests to: every vLLM instance of every host, as HAProxy servers.

    Each is {name: HOST-INSTANCE, host, instance, address (ansible_host or the name), port, served_model_name
    (the instance's served_model_name, else the shared served_model_name given here)}. Inventory variables
    are read through hostvars (vllm_instances, vllm_port); a host without vllm_instances has the role's
    default single instance (DEFAULT_INSTANCE) on vllm_port. A multi-node instance (key node_group) is served
    by its leader only, the first host of that inventory group (`groups`, else the host's own `groups`): its
    workers answer no HTTP.
    """
    servers = []
    for host in hosts or []:
        try:
            values = hostvars[host]
        except KeyError:
            continue
        get = values.get if hasattr(values, "get") else (lambda key, default=None: default)
        port = get("vllm_port", default_port) or default_port
        instances = get("vllm_instances", None) or [{"name": DEFAULT_INSTANCE}]
        for instance in instances:
            if not isinstance(instance, dict):
                continue
            if instance.get("node_group") and not _is_leader(groups, get, host, instance["node_group"]):
                continue
            instance_port = instance.get("port", port)
            if isinstance(instance_port, str) and re.fullmatch(r"[0-9]+", instance_port):
                instance_port = int(instance_port)  # anything else is kept as written, for the gateway's check
            servers.append({
                "name": gateway_server_name(host, instance.get("name", DEFAULT_INSTANCE)),
                "host": host,
                "instance": instance.get("name", DEFAULT_INSTANCE),
                "address": get("ansible_host", None) or host,
                "port": instance_port,
                "served_model_name": instance.get("served_model_name") or served_model_name,
            })
    return servers


def _is_leader(groups, get, host, group):
    groups = groups if groups is not None else get("groups", None)
    members = list((groups or {}).get(group) or []) if hasattr(groups, "get") else []
    return bool(members) and members[0] == host


class FilterModule:
    def filters(self):
        return {
            "vllm_normalize_instances": vllm_normalize_instances,
            "vllm_instance_problems": vllm_instance_problems,
            "vllm_missing_model_problem": vllm_missing_model_problem,
            "gateway_servers": gateway_servers,
            "fleet_tier_problems": fleet_tier_problems,
            "fleet_tier_routing_problem": fleet_tier_routing_problem,
        }
