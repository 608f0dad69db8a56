"""Scrape targets and monitoring sources come from the inventory (plugins/filter/monitoring_targets.py)."""

from __future__ import annotations

from conftest import load_plugin

targets = load_plugin("plugins/filter/monitoring_targets.py", "monitoring_targets_filters")

GROUPS = {
    "gpu_hosts": ["gpu-a", "gpu-b"],
    "gateways": ["gw"],
    "monitoring": ["gw", "prom"],
    "workstations": ["ws"],
}
HOSTVARS = {
    "gpu-a": {"ansible_host": "10.0.0.1", "served_model_name": "Qwen3.5-27B"},
    "gpu-b": {"served_model_name": "Qwen3.5-27B", "vllm_port": 9000,
              "vllm_instances": [{"name": "left", "port": 9001}, {"name": "right"}]},
    "gw": {"ansible_host": "fd00::5", "gateway_metrics_port": 9405},
    "prom": {"monitoring_node_exporter_port": 9110},
    "ws": {"ansible_host": "10.0.9.9"},
}


def by_job(configs):
    return {config["job_name"]: config["static_configs"] for config in configs}


def test_every_vllm_instance_of_every_gpu_host_is_a_target_with_its_labels():
    jobs = by_job(targets.monitoring_scrape_configs(GROUPS, HOSTVARS, 8000))
    assert jobs["vllm"] == [
        {"targets": ["10.0.0.1:8000"], "labels": {"fleet_host": "gpu-a", "vllm_instance": "main",
                                                  "served_model_name": "Qwen3.5-27B"}},
        {"targets": ["gpu-b:9001"], "labels": {"fleet_host": "gpu-b", "vllm_instance": "left",
                                               "served_model_name": "Qwen3.5-27B"}},
        {"targets": ["gpu-b:9000"], "labels": {"fleet_host": "gpu-b", "vllm_instance": "right",
                                               "served_model_name": "Qwen3.5-27B"}},
    ]


def test_an_instance_on_another_tiers_model_is_labelled_with_its_own_served_name():
    """Tiers on different models: FleetVllmWrongServedName compares each instance with the name it must serve."""
    hostvars = dict(HOSTVARS, **{"gpu-b": dict(HOSTVARS["gpu-b"], vllm_instances=[
        {"name": "left", "port": 9001}, {"name": "small", "served_model_name": "Qwen3-4B"}])})
    labels = [config["labels"] for config in by_job(targets.monitoring_scrape_configs(GROUPS, hostvars, 8000))["vllm"]]
    assert [(label["vllm_instance"], label["served_model_name"]) for label in labels] == [
        ("main", "Qwen3.5-27B"), ("left", "Qwen3.5-27B"), ("small", "Qwen3-4B")]


def test_gateways_exporters_and_node_exporters_once_per_host_never_workstations():
    jobs = by_job(targets.monitoring_scrape_configs(GROUPS, HOSTVARS, 8000))
    assert jobs["haproxy"] == [{"targets": ["[fd00::5]:9405"], "labels": {"fleet_host": "gw"}}]
    assert jobs["node"] == [
        {"targets": ["10.0.0.1:9100"], "labels": {"fleet_host": "gpu-a", "fleet_group": "gpu_hosts"}},
        {"targets": ["gpu-b:9100"], "labels": {"fleet_host": "gpu-b", "fleet_group": "gpu_hosts"}},
        {"targets": ["[fd00::5]:9100"], "labels": {"fleet_host": "gw", "fleet_group": "gateways"}},
        {"targets": ["prom:9110"], "labels": {"fleet_host": "prom", "fleet_group": "monitoring"}},
    ]
    assert "ws" not in repr(jobs) and "10.0.9.9" not in repr(jobs)


def test_a_new_gpu_host_adds_its_targets():
    groups = dict(GROUPS, gpu_hosts=GROUPS["gpu_hosts"] + ["gpu-c"])
    jobs = by_job(targets.monitoring_scrape_configs(groups, dict(HOSTVARS, **{"gpu-c": {}}), 8000))
    assert {"targets": ["gpu-c:8000"], "labels": {"fleet_host": "gpu-c", "vllm_instance": "main",
                                                  "served_model_name": ""}} in jobs["vllm"]
    assert {"targets": ["gpu-c:9100"], "labels": {"fleet_host": "gpu-c", "fleet_group": "gpu_hosts"}} in jobs["node"]


def test_jobs_without_targets_are_left_out():
    assert targets.monitoring_scrape_configs({"monitoring": ["prom"]}, {}, 8000) == [
        {"job_name": "node", "metrics_path": "/metrics",
         "static_configs": [{"targets": ["prom:9100"], "labels": {"fleet_host": "prom", "fleet_group": "monitoring"}}]}]
    assert targets.monitoring_scrape_configs({}, {}, 8000) == []


def test_monitoring_sources_are_the_monitoring_hosts_addresses_once():
    assert targets.monitoring_sources(GROUPS, HOSTVARS) == ["fd00::5", "prom"]
    assert targets.monitoring_sources({"gpu_hosts": ["gpu-a"]}, HOSTVARS) == []
    assert targets.monitoring_sources({"monitoring": ["a", "b"]}, {"a": {"ansible_host": "10.1.1.1"},
                                                                   "b": {"ansible_host": "10.1.1.1"}}) == ["10.1.1.1"]


def test_dcgm_exporter_of_every_gpu_host_only_when_its_port_is_set():
    assert "dcgm" not in by_job(targets.monitoring_scrape_configs(GROUPS, HOSTVARS, 8000))
    jobs = by_job(targets.monitoring_scrape_configs(GROUPS, HOSTVARS, 8000, 9400))
    assert jobs["dcgm"] == [{"targets": ["10.0.0.1:9400"], "labels": {"fleet_host": "gpu-a"}},
                            {"targets": ["gpu-b:9400"], "labels": {"fleet_host": "gpu-b"}}]
