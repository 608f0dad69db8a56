# -*- coding: utf-8 -*-
"""Each role's preflight: one filter per role, given a dict of the role's inputs, returning every problem.

The field-notes rules come from their one home (module_utils/fleet_contract.py, ``fleet_rule_problems``): a
role runs every rule whose inputs it passes. The checks below are the role's own. Each message names the
variable, the problem and the fix; the role refuses with all of them at once, before it changes anything.
"""

from __future__ import annotations

import re

from ansible_collections.claude_vllm.fleet.plugins.filter.claude_vllm import (
    extra_env_problems,
    gateway_allowed_requests_problems,
    gateway_server_problems,
    gateway_stats_problems,
    haproxy_count_problem,
    haproxy_time_problem,
    haproxy_word_problem,
    tls_names_problem,
    user_entry_problems,
    users_env_problems,
    whole_number_problem,
)
from ansible_collections.claude_vllm.fleet.plugins.filter.fleet_access import fleet_access_source_problems
from ansible_collections.claude_vllm.fleet.plugins.filter.gateway_backends import gateway_tier_problems
from ansible_collections.claude_vllm.fleet.plugins.filter.fleet_tokens import (
    user_token_epochs_problem,
    user_token_secret_problem,
)
from ansible_collections.claude_vllm.fleet.plugins.filter.vllm_instances import (
    vllm_instance_problems,
    vllm_missing_model_problem,
)
from ansible_collections.claude_vllm.fleet.plugins.filter.vllm_unit_paths import vllm_model_access_problems
from ansible_collections.claude_vllm.fleet.plugins.module_utils.fleet_contract import (
    GATEWAY_ADMIN_SOCKET,
    fleet_rule_problems,
    port_problem,
)

DOCUMENTATION = r"""
name: preflight
short_description: Every problem with a role's inputs, from a dict of them
description:
  - C(vllm_preflight_problems(inputs)) returns the list of messages (variable, problem, fix) for the vllm role;
    empty when the inputs are fine. The keys are the role's variable names, plus the facts the role gathered
    (C(host), C(nvidia_gpu_count), C(workstation_count), C(missing_models), C(model_access_report)).
  - C(claude_code_preflight_problems(inputs)), C(gateway_preflight_problems(inputs)) and
    C(monitoring_preflight_problems(inputs)) do the same for the claude_code, gateway and monitoring roles.
  - Every field-notes rule of the fleet contract whose inputs are in the dict runs too.
"""

VLLM_DEVICES = ("cuda", "cpu", "auto")


def _int(value, fallback=0):
    try:
        return int(value)
    except (TypeError, ValueError):
        return fallback


def vllm_preflight_problems(inputs):
    """The vllm role's refusals (see DOCUMENTATION for the keys)."""
    rules_inputs = dict(inputs)
    if not inputs.get("vllm_require_api_key"):
        rules_inputs.pop("llm_api_token", None)  # the server does not check a token: any value works
    problems = fleet_rule_problems(rules_inputs)
    device = inputs.get("vllm_device")
    if device not in VLLM_DEVICES:
        problems.append(f"vllm_device ({device}) must be cuda, cpu or auto. Fix: set one of them.")
    if device == "cuda" and not _int(inputs.get("nvidia_gpu_count")):
        problems.append(f"vllm_device is cuda but {inputs.get('host')} has no NVIDIA GPU (no PCI display controller "
                        f"of vendor 0x10de); vLLM would fail to start. Fix: set vllm_device: cpu for this host, or "
                        f"check the hardware (and run the nvidia_cuda role, tag cuda, first).")
    if _int(inputs.get("vllm_installs_kept"), -1) < 1:
        problems.append(f"vllm_installs_kept ({inputs.get('vllm_installs_kept')}) must be 1 or more: the install in "
                        f"use is always kept. Fix: set 2 (the default) to keep the previous release, so going back "
                        f"is a switch.")
    if _int(inputs.get("vllm_ready_restarts_allowed"), -1) < 0:
        problems.append(f"vllm_ready_restarts_allowed ({inputs.get('vllm_ready_restarts_allowed')}) must be 0 or "
                        f"more. Fix: set 0 to fail at the first exit while starting, or 1 (the default) to "
                        f"tolerate one.")
    problems += vllm_instance_problems(inputs.get("instances"), bool(inputs.get("vllm_enable_tool_calling", True)),
                                       inputs.get("served_model_name"), inputs.get("served_model_tiers"))
    problems += fleet_access_source_problems(inputs.get("vllm_allowed_sources"))
    problems += fleet_access_source_problems(inputs.get("vllm_metrics_sources"), "vllm_metrics_sources")
    problems += _allowed_requests_problems(inputs.get("vllm_allowed_requests"))
    if inputs.get("per_user_tokens"):
        problems.append(user_token_secret_problem(inputs.get("llm_user_token_secret", "")))
    problems += [vllm_missing_model_problem(path, inputs.get("host")) for path in inputs.get("missing_models") or []]
    problems += vllm_model_access_problems(inputs.get("model_access_report") or "", inputs.get("instances") or [],
                                           inputs.get("vllm_model", ""), inputs.get("vllm_user", "vllm"),
                                           inputs.get("vllm_group", "vllm"), inputs.get("vllm_user_exists", True))
    return [problem for problem in problems if problem]


def _allowed_requests_problems(requests):
    problems = [problem.replace("the gateway forwards", "the server answers")
                for problem in gateway_allowed_requests_problems(requests, "vllm_allowed_requests")]
    if any(isinstance(item, dict) and item.get("path") in ("/health", "/metrics") for item in requests or []):
        problems.append("vllm_allowed_requests lists /health or /metrics: the guard always answers GET /health to "
                        "anyone and /metrics only to loopback and vllm_metrics_sources. Fix: take them out of "
                        "vllm_allowed_requests (list Prometheus in vllm_metrics_sources).")
    return problems


def claude_code_preflight_problems(inputs):
    """The claude_code role's refusals: the keys are its variables, plus users (normalised), passwd, managed_keys."""
    problems = fleet_rule_problems(inputs)
    problems.append(user_token_secret_problem(inputs.get("llm_user_token_secret", "")))
    problems.append(user_token_epochs_problem(inputs.get("llm_user_token_epochs") or {}))
    if inputs.get("llm_user_token_secret") and inputs.get("claude_code_settings_scope") == "managed":
        problems.append("llm_user_token_secret is set (a token per user) while claude_code_settings_scope is managed: "
                        "one machine policy file cannot hold a token per user, so every user would share one. Fix: "
                        "use claude_code_settings_scope: user, or per-user tokens off (llm_user_token_secret empty).")
    for variable, minimum, example in (("claude_code_backup_keep", 0, 3),
                                       ("claude_code_settings_max_bytes", 1024, 1048576),
                                       ("claude_code_settings_timeout", 1, 60)):
        problems.append(whole_number_problem(inputs.get(variable), variable, minimum, example))
    managed, conflicting = inputs.get("managed_keys") or [], inputs.get("claude_code_conflicting_env") or []
    users = inputs.get("users") or []
    problems += extra_env_problems(inputs.get("claude_code_extra_env"), managed, conflicting)
    problems += users_env_problems(users, managed, conflicting)
    problems += user_entry_problems(users, inputs.get("passwd") or {}, inputs.get("claude_code_settings_scope") == "user",
                                    uid_min=inputs.get("claude_code_user_uid_min", 1000))
    return [problem for problem in problems if problem]


GATEWAY_BALANCES = ("affinity", "leastconn")
HEADER_NAME = re.compile(r"[A-Za-z0-9]+(-[A-Za-z0-9]+)*")


def gateway_balance_problems(balance, header, factor):
    """gateway_balance, and with affinity the header it hashes and the bound on a server's load."""
    if balance not in GATEWAY_BALANCES:
        return [f"gateway_balance ({balance!r}) must be affinity or leastconn. Fix: keep affinity (each Claude Code "
                f"conversation stays on one server and its prefix cache), or set leastconn."]
    if balance != "affinity":
        return []
    problems = []
    if not isinstance(header, str) or not HEADER_NAME.fullmatch(header):
        problems.append(f"gateway_affinity_header ({header!r}) must be an HTTP header name of letters, digits and "
                        f"single '-' between them (it is written unquoted into haproxy.cfg). Fix: keep "
                        f"X-Claude-Code-Session-Id, the header Claude Code sends with every request.")
    number = _int(factor, -1) if not isinstance(factor, bool) else -1
    if number != 0 and not 100 < number <= 65535:
        problems.append(f"gateway_affinity_balance_factor ({factor!r}) must be 0 (no bound) or a whole number above "
                        f"100 (a server may take that percentage of the average load; 100 or less would leave no "
                        f"server room for the next request). Fix: keep 200, or 150 for a tighter bound.")
    return problems


def gateway_preflight_problems(inputs):
    """The gateway role's refusals: the keys are its variables, plus host, servers and token_holders."""
    per_user = bool(inputs.get("llm_user_token_secret"))
    rules_inputs = dict(inputs)
    if not (inputs.get("gateway_health_check_token") or per_user):
        rules_inputs.pop("llm_api_token", None)  # the gateway sends no token of its own
    problems = fleet_rule_problems(rules_inputs)
    group, servers = inputs.get("gateway_backend_group"), inputs.get("servers") or []
    if not servers:
        problems.append(f"The group {group} (gateway_backend_group) has no hosts: the gateway would have nothing to "
                        f"send requests to. Fix: put the vLLM servers in it, or remove this host from gateways.")
    port, vllm_port = inputs.get("gateway_port"), inputs.get("vllm_port")
    if str(port) != str(vllm_port):
        problems.append(port_problem(port, "gateway_port"))
    problems.append(haproxy_word_problem(inputs.get("gateway_bind_address"), "gateway_bind_address", "address",
                                         '"*" or 10.0.0.5'))
    problems.append(haproxy_word_problem(inputs.get("gateway_admin_socket"), "gateway_admin_socket", "path",
                                         GATEWAY_ADMIN_SOCKET))
    if inputs.get("gateway_stats_listen"):
        problems.append(haproxy_word_problem(inputs["gateway_stats_listen"], "gateway_stats_listen", "address",
                                             "127.0.0.1:8404"))
    for variable in ("gateway_health_check_interval", "gateway_timeout_connect", "gateway_timeout_client",
                     "gateway_timeout_server", "gateway_timeout_http_request"):
        problems.append(haproxy_time_problem(inputs.get(variable), variable))
    for variable, minimum in (("gateway_health_check_fall", 1), ("gateway_health_check_rise", 1),
                              ("gateway_retries", 0), ("gateway_maxconn", 1), ("gateway_max_request_body", 1)):
        problems.append(haproxy_count_problem(inputs.get(variable), variable, minimum))
    problems += gateway_balance_problems(inputs.get("gateway_balance"), inputs.get("gateway_affinity_header"),
                                         inputs.get("gateway_affinity_balance_factor"))
    if any(server.get("host") == inputs.get("host") and str(server.get("port")) == str(port) for server in servers):
        problems.append(f"gateway_port {port} is also a vLLM port on this host ({inputs.get('host')} is in {group}): "
                        f"both cannot listen on it. Fix: give the gateway another port, or run it on another host.")
    certificate, key = inputs.get("gateway_tls_certificate") or "", inputs.get("gateway_tls_private_key") or ""
    if bool(certificate) != bool(key):
        problems.append("gateway_tls_certificate is set but gateway_tls_private_key is empty (or the other way round). "
                        "Fix: set both (the key from ansible-vault), or neither for plain http.")
    if certificate and "BEGIN CERTIFICATE" not in certificate:
        problems.append("gateway_tls_certificate does not look like a PEM certificate (no BEGIN CERTIFICATE line). "
                        "Fix: give the certificate text, chain included.")
    if key and "PRIVATE KEY" not in key:
        problems.append("gateway_tls_private_key does not look like a PEM private key (no PRIVATE KEY line). Fix: give "
                        "the key text (from ansible-vault).")
    problems.append(user_token_secret_problem(inputs.get("llm_user_token_secret", "")))
    problems.append(user_token_epochs_problem(inputs.get("llm_user_token_epochs") or {}))
    workstations = inputs.get("gateway_workstation_group")
    if per_user and not inputs.get("token_holders"):
        problems.append(f"llm_user_token_secret is set (a token per user), but no host of {workstations} "
                        f"(gateway_workstation_group) lists claude_code_users in the inventory (less "
                        f"llm_revoked_users): the gateway would refuse every request with 401. Fix: set "
                        f"claude_code_users in the inventory (e.g. group_vars/{workstations}.yml), not only in a play.")
    if inputs.get("gateway_tls_min_version") not in ("TLSv1.2", "TLSv1.3"):
        problems.append(f"gateway_tls_min_version ({inputs.get('gateway_tls_min_version')}) must be TLSv1.2 or "
                        f"TLSv1.3: older versions have no forward-secret AEAD ciphers and are refused by current "
                        f"clients. Fix: keep TLSv1.2.")
    problems.append(tls_names_problem(inputs.get("gateway_tls_ciphers"), "gateway_tls_ciphers"))
    problems.append(tls_names_problem(inputs.get("gateway_tls_ciphersuites"), "gateway_tls_ciphersuites",
                                      "TLS_AES_128_GCM_SHA256"))
    if inputs.get("gateway_metrics_sources"):
        metrics_port = inputs.get("gateway_metrics_port")
        problems.append(port_problem(metrics_port, "gateway_metrics_port"))
        if str(metrics_port) == str(port):
            problems.append(f"gateway_metrics_port and gateway_port are both {port}: the exporter needs its own "
                            f"listener, which only the monitoring hosts reach. Fix: keep gateway_metrics_port "
                            f"at 8405 (or any other free port).")
        problems += fleet_access_source_problems(inputs["gateway_metrics_sources"], "gateway_metrics_sources")
    problems += gateway_server_problems(servers, vllm_port)
    problems += gateway_tier_problems(servers, inputs.get("served_model_name"), inputs.get("served_model_tiers"),
                                      inputs.get("gateway_balance"), group)
    problems += gateway_allowed_requests_problems(inputs.get("gateway_allowed_requests"))
    problems += gateway_stats_problems(inputs.get("gateway_stats_listen"), inputs.get("gateway_stats_user"),
                                       inputs.get("gateway_stats_password"))
    return [problem for problem in problems if problem]


PROMETHEUS_DURATION = re.compile(r"(?:[0-9]+(?:ms|s|m|h|d|w|y))+")
MONITORING_DURATIONS = ("monitoring_scrape_interval", "monitoring_evaluation_interval", "monitoring_retention",
                        "monitoring_alert_rate_window", "monitoring_alert_target_down_for",
                        "monitoring_alert_served_name_for", "monitoring_alert_gateway_no_server_for",
                        "monitoring_alert_queue_time_for", "monitoring_alert_kv_cache_usage_for",
                        "monitoring_alert_ttft_p95_for", "monitoring_alert_gateway_5xx_for",
                        "monitoring_alert_disk_free_for", "monitoring_alert_smoke_failed_for",
                        "monitoring_alert_smoke_max_age")
MONITORING_RATIOS = ("monitoring_alert_kv_cache_usage_ratio", "monitoring_alert_gateway_5xx_ratio",
                     "monitoring_alert_disk_free_ratio")
MONITORING_SECONDS = ("monitoring_alert_queue_time_seconds", "monitoring_alert_ttft_p95_seconds")


def _number(value):
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def monitoring_preflight_problems(inputs):
    """The monitoring role's refusals: the keys are its variables, plus host and scrape_configs."""
    problems = []
    for variable in ("monitoring_port", "monitoring_node_exporter_port"):
        if variable in inputs:
            problems.append(port_problem(inputs[variable], variable))
    if str(inputs.get("monitoring_dcgm_exporter_port", 0)) != "0":
        problems.append(port_problem(inputs["monitoring_dcgm_exporter_port"], "monitoring_dcgm_exporter_port"))
    if "monitoring_port" in inputs and str(inputs.get("monitoring_port")) == str(inputs.get("monitoring_node_exporter_port")):
        problems.append(f"monitoring_port and monitoring_node_exporter_port are both {inputs['monitoring_port']}: "
                        f"Prometheus and the node exporter cannot listen on one port. Fix: keep 9090 and 9100.")
    for variable in MONITORING_DURATIONS:
        if variable in inputs and not PROMETHEUS_DURATION.fullmatch(str(inputs[variable])):
            problems.append(f"{variable} ({inputs[variable]!r}) is not a Prometheus duration. Fix: a number with a "
                            f"unit, e.g. 30s, 5m, 2h or 1d (units ms, s, m, h, d, w, y; no spaces, no decimals).")
    for variable in MONITORING_RATIOS:
        if variable in inputs:
            value = _number(inputs[variable])
            if value is None or not 0 < value <= 1:
                problems.append(f"{variable} ({inputs[variable]!r}) must be a ratio above 0 and at most 1. Fix: "
                                f"e.g. 0.9 for 90%.")
    for variable in MONITORING_SECONDS:
        if variable in inputs:
            value = _number(inputs[variable])
            if value is None or value <= 0:
                problems.append(f"{variable} ({inputs[variable]!r}) must be a number of seconds above 0. Fix: e.g. 10.")
    if "monitoring_allowed_sources" in inputs:
        problems += fleet_access_source_problems(inputs["monitoring_allowed_sources"], "monitoring_allowed_sources")
    if "scrape_configs" in inputs and not inputs["scrape_configs"]:
        problems.append("The inventory has no gpu_hosts, gateways or monitoring hosts to scrape. Fix: add the "
                        "fleet's hosts to the inventory this monitoring host is configured from.")
    return [problem for problem in problems if problem]


class FilterModule:
    def filters(self):
        return {
            "monitoring_preflight_problems": monitoring_preflight_problems,
            "vllm_preflight_problems": vllm_preflight_problems,
            "claude_code_preflight_problems": claude_code_preflight_problems,
            "gateway_preflight_problems": gateway_preflight_problems,
        }
