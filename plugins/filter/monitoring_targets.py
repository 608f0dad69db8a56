# -*- coding: utf-8 -*-
"""What Prometheus scrapes, and who may scrape: both from the inventory, never listed by hand.

- ``monitoring_sources(groups, hostvars)``: the hosts of the ``monitoring`` group, each as ``ansible_host``
  when set, else its inventory name: the sources the gateways, the vLLM instances and the node exporters
  let read their metrics (nobody else).
- ``monitoring_scrape_configs(groups, hostvars, ...)``: Prometheus ``scrape_configs``: every vLLM instance of
  every GPU host (job ``vllm``, labels fleet_host, vllm_instance, served_model_name), every gateway's
  exporter (job ``haproxy``, label fleet_host), the node exporter of every GPU host, gateway and
  monitoring host (job ``node``, labels fleet_host, fleet_group), and with ``dcgm_port`` set NVIDIA's DCGM
  exporter on every GPU host (job ``dcgm``, label fleet_host). Jobs without targets are left out.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: monitoring_targets
short_description: Prometheus scrape targets and the monitoring sources, from the inventory
description:
  - C(monitoring_sources) lists the monitoring hosts (ansible_host, else the inventory name).
  - C(monitoring_scrape_configs) returns Prometheus scrape_configs for every vLLM instance of the GPU hosts, every
    gateway's HAProxy exporter and the node exporters of GPU hosts, gateways and monitoring hosts, with the labels
    the fleet's alert rules and dashboard select on.
options:
  _input:
    description: The C(groups) magic variable.
    type: dict
    required: true
  hostvars:
    description: The C(hostvars) magic variable (per-host vllm_port, vllm_instances, served_model_name,
      gateway_metrics_port, monitoring_node_exporter_port are read through it).
    type: dict
    required: true
  vllm_port:
    description: Default port of the vLLM instances.
    type: int
    default: 8000
  dcgm_port:
    description: Port of NVIDIA's DCGM exporter on the GPU hosts; 0 scrapes none.
    type: int
    default: 0
"""

EXAMPLES = r"""
scrape_configs: "{{ groups | claude_vllm.fleet.monitoring_scrape_configs(hostvars, vllm_port) }}"
vllm_metrics_sources: "{{ groups | claude_vllm.fleet.monitoring_sources(hostvars) }}"
"""

RETURN = r"""
_value:
  description: A list of scrape_configs (monitoring_scrape_configs) or of addresses (monitoring_sources).
  type: list
"""

from ansible_collections.claude_vllm.fleet.plugins.filter.vllm_instances import gateway_servers
from ansible_collections.claude_vllm.fleet.plugins.module_utils.fleet_contract import (
    GATEWAY_METRICS_PORT,
    MONITORING_GROUP,
    NODE_EXPORTER_PORT,
    SCRAPE_JOBS,
)


def _get(hostvars, host, key, default=None):
    try:
        values = hostvars[host]
    except KeyError:
        return default
    value = values.get(key, default) if hasattr(values, "get") else default
    return default if value in (None, "") else value


def _address(hostvars, host):
    return str(_get(hostvars, host, "ansible_host", host))


def _target(address, port):
    """host:port, with an IPv6 address in brackets."""
    address = str(address)
    if ":" in address and not address.startswith("["):
        address = f"[{address}]"
    return f"{address}:{port}"


def monitoring_sources(groups, hostvars, group=MONITORING_GROUP):
    sources = []
    for host in (groups or {}).get(group, []) or []:
        address = _address(hostvars, host)
        if address not in sources:
            sources.append(address)
    return sources


def monitoring_scrape_configs(groups, hostvars, vllm_port=8000, dcgm_port=0, gpu_group="gpu_hosts",
                              gateway_group="gateways", monitoring_group=MONITORING_GROUP):
    groups = groups or {}
    jobs = []

    vllm = []
    for server in gateway_servers(hostvars, groups.get(gpu_group, []), vllm_port, groups):
        vllm.append({"targets": [_target(server["address"], server["port"])],
                     "labels": {"fleet_host": server["host"], "vllm_instance": server["instance"],
                                # the instance's own served name (a tier on another model), else the host's
                                "served_model_name": str(server["served_model_name"]
                                                         or _get(hostvars, server["host"], "served_model_name", ""))}})
    if vllm:
        jobs.append({"job_name": SCRAPE_JOBS["vllm"], "metrics_path": "/metrics", "static_configs": vllm})

    gateways = [{"targets": [_target(_address(hostvars, host),
                                     _get(hostvars, host, "gateway_metrics_port", GATEWAY_METRICS_PORT))],
                 "labels": {"fleet_host": host}}
                for host in groups.get(gateway_group, []) or []]
    if gateways:
        jobs.append({"job_name": SCRAPE_JOBS["gateway"], "metrics_path": "/metrics", "static_configs": gateways})

    nodes, seen = [], set()
    for group in (gpu_group, gateway_group, monitoring_group):
        for host in groups.get(group, []) or []:
            if host in seen:
                continue
            seen.add(host)
            port = _get(hostvars, host, "monitoring_node_exporter_port", NODE_EXPORTER_PORT)
            nodes.append({"targets": [_target(_address(hostvars, host), port)],
                          "labels": {"fleet_host": host, "fleet_group": group}})
    if nodes:
        jobs.append({"job_name": SCRAPE_JOBS["node"], "metrics_path": "/metrics", "static_configs": nodes})

    if dcgm_port and int(dcgm_port):
        gpus = [{"targets": [_target(_address(hostvars, host), int(dcgm_port))], "labels": {"fleet_host": host}}
                for host in groups.get(gpu_group, []) or []]
        if gpus:
            jobs.append({"job_name": SCRAPE_JOBS["dcgm"], "metrics_path": "/metrics", "static_configs": gpus})
    return jobs


class FilterModule:
    def filters(self):
        return {
            "monitoring_sources": monitoring_sources,
            "monitoring_scrape_configs": monitoring_scrape_configs,
        }
