"""Each role's preflight filter (plugins/filter/preflight.py), given a dict of the role's inputs."""

from __future__ import annotations

import pytest

from conftest import load_plugin

preflight = load_plugin("plugins/filter/preflight.py", "preflight_filters")
PASSWD = {"alice": ["x", "1000", "1000", "Alice", "/home/alice", "/bin/bash"]}
TOKEN = "0123456789abcdef0123456789abcdef"

VLLM = {"host": "gpu-01", "served_model_name": "Qwen3.5-27B", "vllm_max_model_len": 65536,
        "claude_code_prompt_token_reserve": 25000, "vllm_device": "cuda", "nvidia_gpu_count": 1,
        "vllm_enable_tool_calling": True, "vllm_tool_call_parser": "qwen3_coder", "workstation_count": 2,
        "vllm_require_api_key": True, "llm_api_token": TOKEN, "vllm_installs_kept": 2,
        "vllm_ready_restarts_allowed": 1, "instances": [{"name": "main", "port": 8000, "model": "Qwen/Qwen3.5-27B",
                                                         "tool_call_parser": "qwen3_coder", "extra_args": [],
                                                         "extra_env": {}}],
        "vllm_allowed_sources": [], "vllm_metrics_sources": [],
        "vllm_allowed_requests": [{"method": "POST", "path": "/v1/messages"}], "per_user_tokens": False,
        "missing_models": [], "model_access_report": "", "vllm_model": "Qwen/Qwen3.5-27B"}
CLAUDE_CODE = {"anthropic_base_url": "http://gpu-01:8000", "vllm_port": 8000, "served_model_name": "Qwen3.5-27B",
               "claude_code_model_alias": "sonnet", "vllm_max_model_len": 65536,
               "claude_code_prompt_token_reserve": 25000, "claude_code_max_output_tokens": 32000,
               "claude_code_max_context_tokens": 65536, "llm_api_token": TOKEN, "llm_user_token_secret": "",
               "claude_code_settings_scope": "user", "claude_code_backup_keep": 3,
               "claude_code_settings_max_bytes": 1048576, "claude_code_settings_timeout": 60,
               "claude_code_extra_env": {}, "claude_code_conflicting_env": ["ANTHROPIC_MODEL"],
               "managed_keys": ["ANTHROPIC_BASE_URL"], "users": [{"name": "alice", "env": {}}], "passwd": PASSWD,
               "claude_code_user_uid_min": 1000}
GATEWAY = {"host": "gw-01", "servers": [{"name": "gpu-01-main", "host": "gpu-01", "address": "10.0.0.5", "port": 8000}],
           "token_holders": [], "served_model_name": "Qwen3.5-27B", "vllm_port": 8000, "llm_api_token": TOKEN,
           "gateway_backend_group": "gpu_hosts", "gateway_workstation_group": "workstations", "gateway_port": 8000,
           "gateway_balance": "affinity", "gateway_affinity_header": "X-Claude-Code-Session-Id",
           "gateway_affinity_balance_factor": "200",
           "gateway_bind_address": "*", "gateway_admin_socket": "/run/haproxy/admin.sock",
           "gateway_stats_listen": "", "gateway_stats_user": "", "gateway_stats_password": "",
           "gateway_health_check_interval": "5s", "gateway_health_check_fall": 3, "gateway_health_check_rise": 2,
           "gateway_health_check_token": True, "gateway_timeout_connect": "5s", "gateway_timeout_client": "1h",
           "gateway_timeout_server": "1h", "gateway_timeout_http_request": "30s", "gateway_retries": 2,
           "gateway_maxconn": 2000, "gateway_max_request_body": 10485760, "gateway_tls_certificate": "",
           "gateway_tls_private_key": "", "gateway_tls_min_version": "TLSv1.2", "gateway_tls_ciphers": ["ECDHE-RSA-AES128-GCM-SHA256"],
           "gateway_tls_ciphersuites": ["TLS_AES_128_GCM_SHA256"], "gateway_allowed_requests": [{"method": "POST", "path": "/v1/messages"}]}
ROLES = {"vllm": (preflight.vllm_preflight_problems, VLLM),
         "claude_code": (preflight.claude_code_preflight_problems, CLAUDE_CODE),
         "gateway": (preflight.gateway_preflight_problems, GATEWAY)}


@pytest.mark.parametrize("role", sorted(ROLES))
def test_good_inputs_pass(role):
    check, inputs = ROLES[role]
    assert check(inputs) == []


@pytest.mark.parametrize("role", sorted(ROLES))
def test_every_role_refuses_a_served_name_with_a_slash(role):
    check, inputs = ROLES[role]
    problems = check(dict(inputs, served_model_name="Qwen/Qwen3.5-27B"))
    assert len(problems) == 1 and problems[0].startswith("served_model_name ('Qwen/Qwen3.5-27B') contains '/'")


@pytest.mark.parametrize("role, change, expected", [
    ("vllm", {"nvidia_gpu_count": 0}, "vllm_device is cuda but gpu-01 has no NVIDIA GPU"),
    ("vllm", {"vllm_device": "tpu"}, "vllm_device (tpu) must be cuda, cpu or auto"),
    ("vllm", {"vllm_installs_kept": 0}, "vllm_installs_kept (0) must be 1 or more"),
    ("vllm", {"vllm_enable_tool_calling": False}, "vllm_enable_tool_calling is false while the workstations"),
    ("vllm", {"vllm_tool_call_parser": ""}, "vllm_tool_call_parser is empty"),
    ("vllm", {"vllm_max_model_len": 16384}, "vllm_max_model_len (16384) leaves only 0 output tokens"),
    ("vllm", {"claude_code_prompt_token_reserve": 63000}, "after Claude Code's ~63000-token prompt"),
    ("vllm", {"vllm_allowed_requests": [{"method": "GET", "path": "/metrics"}]}, "vllm_allowed_requests lists /health"),
    ("vllm", {"missing_models": ["/srv/models/x"]}, "the local model directory /srv/models/x does not exist on gpu-01"),
    ("claude_code", {"anthropic_base_url": "http://gpu-01:8000/v1"}, "anthropic_base_url ('http://gpu-01:8000/v1')"),
    ("claude_code", {"claude_code_model_alias": "Qwen3.5-27B"}, "claude_code_model_alias ('Qwen3.5-27B') must be"),
    ("claude_code", {"llm_user_token_secret": "x" * 40, "claude_code_settings_scope": "managed"},
     "llm_user_token_secret is set (a token per user) while claude_code_settings_scope is managed"),
    ("claude_code", {"claude_code_backup_keep": -1}, "claude_code_backup_keep"),
    ("gateway", {"servers": []}, "The group gpu_hosts (gateway_backend_group) has no hosts"),
    ("gateway", {"gateway_balance": "roundrobin"}, "gateway_balance ('roundrobin') must be affinity or leastconn"),
    ("gateway", {"gateway_affinity_header": "X-Claude-Code-Session-Id }"}, "must be an HTTP header name"),
    ("gateway", {"gateway_affinity_balance_factor": "90"}, "gateway_affinity_balance_factor ('90') must be 0"),
    ("gateway", {"gateway_affinity_balance_factor": True}, "gateway_affinity_balance_factor (True) must be 0"),
    ("gateway", {"gateway_tls_certificate": "-----BEGIN CERTIFICATE-----"}, "gateway_tls_private_key is empty"),
    ("gateway", {"gateway_tls_min_version": "TLSv1.1"}, "gateway_tls_min_version (TLSv1.1) must be TLSv1.2"),
    ("gateway", {"host": "gpu-01"}, "gateway_port 8000 is also a vLLM port on this host"),
    ("gateway", {"llm_user_token_secret": "x" * 40}, "no host of workstations (gateway_workstation_group)"),
    ("gateway", {"gateway_timeout_client": "1 hour"}, "gateway_timeout_client"),
    ("vllm", {"served_model_tiers": {"fast": "Qwen3-4B"}}, "served_model_tiers has the key 'fast'"),
    ("claude_code", {"served_model_tiers": {"haiku": "Qwen/Qwen3-4B"}},
     "served_model_tiers.haiku ('Qwen/Qwen3-4B') contains '/'"),
    ("claude_code", {"served_model_tiers": ["haiku"]}, "served_model_tiers (['haiku']) must be a mapping"),
    ("vllm", {"instances": [dict(VLLM["instances"][0], served_model_name="Qwen3-4B")]},
     "vllm_instances[main].served_model_name ('Qwen3-4B') is none of the names the fleet's tiers ask for"),
    ("vllm", {"served_model_tiers": {"haiku": "Qwen3-4B"},
              "instances": [dict(VLLM["instances"][0], served_model_name="Qwen3-8B")]},
     "'Qwen3.5-27B' (sonnet, opus), 'Qwen3-4B' (haiku)"),
])
def test_each_refusal_names_its_variable(role, change, expected):
    check, inputs = ROLES[role]
    problems = check(dict(inputs, **change))
    assert any(expected in problem for problem in problems), problems
    assert all("Fix:" in problem for problem in problems), problems


def test_the_token_is_checked_only_where_it_is_used():
    assert preflight.vllm_preflight_problems(dict(VLLM, vllm_require_api_key=False, llm_api_token="")) == []
    assert preflight.vllm_preflight_problems(dict(VLLM, llm_api_token=""))[0].startswith("llm_api_token is empty")
    assert preflight.gateway_preflight_problems(dict(GATEWAY, gateway_health_check_token=False, llm_api_token="")) == []


def test_leastconn_ignores_the_affinity_settings_and_0_turns_the_bound_off():
    assert preflight.gateway_preflight_problems(dict(GATEWAY, gateway_balance="leastconn",
                                                     gateway_affinity_balance_factor="90")) == []
    assert preflight.gateway_preflight_problems(dict(GATEWAY, gateway_affinity_balance_factor=0)) == []


# ------------------------------------------------------------------------------------------------ monitoring
def monitoring_defaults():
    """The monitoring role's defaults (what the role passes when nothing is overridden), plus the targets."""
    import yaml

    from conftest import REPO

    values = yaml.safe_load((REPO / "roles/monitoring/defaults/main.yml").read_text())
    values["monitoring_node_exporter_port"] = 9100  # a contract lookup in the file
    values.update(host="prom-01", scrape_configs=[{"job_name": "node"}])
    return values


def test_monitoring_defaults_pass():
    assert preflight.monitoring_preflight_problems(monitoring_defaults()) == []


@pytest.mark.parametrize("variable,value,expected", [
    ("monitoring_scrape_interval", "15", "monitoring_scrape_interval ('15') is not a Prometheus duration"),
    ("monitoring_alert_target_down_for", "1.5m", "monitoring_alert_target_down_for ('1.5m') is not a Prometheus"),
    ("monitoring_retention", "30 days", "monitoring_retention ('30 days')"),
    ("monitoring_alert_kv_cache_usage_ratio", 90, "monitoring_alert_kv_cache_usage_ratio (90) must be a ratio"),
    ("monitoring_alert_disk_free_ratio", 0, "monitoring_alert_disk_free_ratio (0) must be a ratio"),
    ("monitoring_alert_ttft_p95_seconds", "fast", "monitoring_alert_ttft_p95_seconds ('fast') must be a number"),
    ("monitoring_port", 70000, "monitoring_port"),
    ("monitoring_node_exporter_port", 9090, "monitoring_port and monitoring_node_exporter_port are both 9090"),
    ("monitoring_allowed_sources", ["10.0.0.1/8"], "monitoring_allowed_sources"),
    ("scrape_configs", [], "no gpu_hosts, gateways or monitoring hosts to scrape"),
    ("monitoring_dcgm_exporter_port", 94000, "monitoring_dcgm_exporter_port"),
])
def test_monitoring_refuses_bad_input_naming_the_variable(variable, value, expected):
    problems = preflight.monitoring_preflight_problems(dict(monitoring_defaults(), **{variable: value}))
    assert len(problems) == 1 and expected in problems[0], problems
    assert "Fix:" in problems[0]


def test_an_instance_may_serve_a_tiers_name():
    small = dict(VLLM["instances"][0], name="small", port=8001, model="Qwen/Qwen3-4B", served_model_name="Qwen3-4B")
    inputs = dict(VLLM, served_model_tiers={"haiku": "Qwen3-4B"}, instances=VLLM["instances"] + [small])
    assert preflight.vllm_preflight_problems(inputs) == []
    # the same instance without the tier: nothing would ask for its name
    (problem,) = preflight.vllm_preflight_problems(dict(inputs, served_model_tiers={}))
    assert problem.startswith("vllm_instances[small].served_model_name ('Qwen3-4B') is none of the names")
    assert "Fix:" in problem and "served_model_tiers: {haiku: Qwen3-4B}" in problem


def test_without_tiers_the_shared_name_is_every_instances():
    assert preflight.vllm_preflight_problems(dict(VLLM, served_model_tiers={})) == []
    named = dict(VLLM["instances"][0], served_model_name="Qwen3.5-27B")
    assert preflight.vllm_preflight_problems(dict(VLLM, served_model_tiers={}, instances=[named])) == []
