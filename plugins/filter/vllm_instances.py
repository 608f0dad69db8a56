# -*- coding: utf-8 -*-
"""Normalisation and checks of the vllm role's instance list."""

from __future__ import annotations

import re

DOCUMENTATION = r"""
name: vllm_instances
short_description: Normalise and check vllm_instances
description:
  - C(vllm_normalize_instances) fills each instance with the role-wide defaults and adds its unit name.
  - C(vllm_instance_problems) returns a list of messages (variable, problem, fix) for bad instances.
"""

from ansible_collections.claude_vllm.fleet.plugins.module_utils.fleet_contract import (
    DEFAULT_INSTANCE,
    gateway_server_name,
)

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def vllm_normalize_instances(instances, port=8000, model="", tensor_parallel_size=1, tool_call_parser=""):
    normalized = []
    for item in instances or []:
        entry = dict(item) if isinstance(item, dict) else {"name": item}
        entry.setdefault("port", port)
        entry.setdefault("model", model)
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


def vllm_instance_problems(instances, tool_calling=True):
    """tool_calling: vllm_enable_tool_calling (without it no instance needs a parser)."""
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
    return problems


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
        }
