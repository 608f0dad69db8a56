"""The gateway's backends per served name (plugins/filter/gateway_backends.py) and the gateway preflight's checks
of tiers: a tier nobody serves, a server nobody asks for, two names with one backend. The rendered haproxy.cfg
and the live routing are in test_gateway_config.py."""

from __future__ import annotations

from conftest import load_plugin

backends = load_plugin("plugins/filter/gateway_backends.py", "gateway_backends_filters")
instances = load_plugin("plugins/filter/vllm_instances.py", "vllm_instances_filters_tiers")
preflight = load_plugin("plugins/filter/preflight.py", "preflight_filters_tiers")

BIG, SMALL = "Qwen3.5-27B", "Qwen3-4B"
HOSTVARS = {
    "gpu-a": {"ansible_host": "10.0.0.1"},
    "gpu-b": {"vllm_instances": [{"name": "main"}, {"name": "small", "port": 8001, "served_model_name": SMALL}]},
}


def servers(hostvars=None):
    return instances.gateway_servers(hostvars or HOSTVARS, list(hostvars or HOSTVARS), 8000, None, BIG)


def test_without_tiers_one_backend_holds_every_server():
    plain = {host: {"ansible_host": host} for host in ("gpu-a", "gpu-b")}
    (only,) = backends.gateway_backends(servers(plain), BIG, {})
    assert only == {"model": BIG, "backend": "vllm", "unkeyed": "vllm_no_session",
                    "tiers": ["sonnet", "opus", "haiku"], "servers": servers(plain)}
    assert backends.gateway_tier_problems(servers(plain), BIG, {}) == []


def test_each_served_name_gets_the_servers_that_serve_it():
    big, small = backends.gateway_backends(servers(), BIG, {"haiku": SMALL})
    assert (big["model"], big["backend"], big["tiers"]) == (BIG, "vllm", ["sonnet", "opus"])
    assert [server["name"] for server in big["servers"]] == ["gpu-a-main", "gpu-b-main"]
    assert (small["model"], small["backend"], small["unkeyed"], small["tiers"]) == (
        SMALL, "vllm_Qwen3-4B", "vllm_Qwen3-4B_no_session", ["haiku"])
    assert [(server["name"], server["port"]) for server in small["servers"]] == [("gpu-b-small", 8001)]
    assert backends.gateway_tier_problems(servers(), BIG, {"haiku": SMALL}) == []


def test_a_tier_no_server_serves_is_refused_naming_the_tier_and_the_fix():
    (problem,) = backends.gateway_tier_problems(servers(), BIG, {"haiku": SMALL, "opus": "Qwen3-235B"})
    assert problem.startswith("the tier opus (served_model_tiers) asks for 'Qwen3-235B', but no vLLM instance of "
                              "gpu_hosts (gateway_backend_group) serves it")
    assert "Fix: add an instance with served_model_name: Qwen3-235B" in problem


def test_served_model_name_needs_a_server_even_when_no_tier_uses_it():
    everything_small = {"sonnet": SMALL, "opus": SMALL, "haiku": SMALL}
    problems = backends.gateway_tier_problems(servers(), BIG, everything_small)
    assert problems == []  # gpu-a and gpu-b still serve served_model_name
    only_small = {"gpu-b": {"vllm_instances": [{"name": "small", "served_model_name": SMALL}]}}
    (problem,) = backends.gateway_tier_problems(servers(only_small), BIG, everything_small)
    assert problem.startswith(f"served_model_name '{BIG}' is what the gateway sends a request to")


def test_a_server_no_tier_asks_for_is_refused():
    (problem,) = backends.gateway_tier_problems(servers(), BIG, {})
    assert problem.startswith(f"gateway server gpu-b-small (host gpu-b, vllm_instances small) serves '{SMALL}', "
                              f"which none of the fleet's tiers asks for")
    assert f"e.g. haiku: {SMALL}" in problem


def test_names_that_share_a_backend_are_refused_once():
    hostvars = {"gpu-a": {}, "gpu-b": {"vllm_instances": [{"name": "p", "served_model_name": "m+1"},
                                                          {"name": "u", "port": 8001, "served_model_name": "m_1"}]}}
    problems = backends.gateway_tier_problems(servers(hostvars), BIG, {"opus": "m+1", "haiku": "m_1"})
    assert len(problems) == 1 and "'m+1' and 'm_1' would share the gateway's backend vllm_m_1" in problems[0]
    assert backends.gateway_tier_problems(servers(hostvars), BIG, {"opus": "m+1", "haiku": "m_1"}, "leastconn") \
        == problems


def test_bad_tiers_are_left_to_the_contract_rule_and_nothing_else_is_guessed():
    """The gateway's preflight runs the contract's served_model_tiers rule: named once, there, not here again."""
    assert backends.gateway_tier_problems(servers(), BIG, {"fast": SMALL}) == []
    preflight = load_plugin("plugins/filter/preflight.py", "preflight_for_tiers")
    problems = [p for p in preflight.fleet_rule_problems({"served_model_tiers": {"fast": SMALL}}) if p]
    assert len(problems) == 1 and "served_model_tiers has the key 'fast'" in problems[0]


def test_no_servers_at_all_is_left_to_the_empty_group_message():
    assert backends.gateway_tier_problems([], BIG, {"haiku": SMALL}) == []


def test_the_gateway_preflight_runs_the_tier_checks():
    inputs = {"servers": servers(), "served_model_name": BIG, "served_model_tiers": {}, "gateway_balance": "affinity",
              "gateway_backend_group": "gpu_hosts"}
    problems = preflight.gateway_preflight_problems(inputs)
    assert any("gateway server gpu-b-small" in problem for problem in problems), problems
    inputs["served_model_tiers"] = {"haiku": SMALL}
    assert not any("gpu-b-small" in problem or "served_model_tiers" in problem
                   for problem in preflight.gateway_preflight_problems(inputs))


def test_the_vllm_role_drains_and_puts_back_each_instance_in_its_names_backend(tmp_path):
    """The drain handler and the put-back task name the backend the gateway gave the instance's served name:
    their own expressions, evaluated by the real ansible-playbook for an instance of each kind."""
    import json
    import subprocess
    import sys

    import yaml
    from conftest import ANSIBLE_PLAYBOOK, REPO, playbook_env

    expressions = set()
    for path in ("roles/vllm/tasks/gateway.yml", "roles/vllm/handlers/main.yml"):
        for task in yaml.safe_load((REPO / path).read_text()):
            module = task.get("claude_vllm.fleet.haproxy_server")
            if module:
                expressions.add(module["backend"])
    assert len(expressions) == 1, expressions
    items = [["gw", {"name": "main"}], ["gw", {"name": "small", "served_model_name": SMALL}],
             ["gw", {"name": "plus", "served_model_name": "Qwen3-4B+fast"}], ["gw", {"name": "same", "served_model_name": BIG}]]
    play = [{"hosts": "localhost", "gather_facts": False, "vars": {"served_model_name": BIG}, "tasks": [
        {"name": "backend", "ansible.builtin.debug": {"msg": expressions.pop()}, "loop": items}]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    result = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-c", "local", str(tmp_path / "play.yml"),
                             "-e", f"ansible_python_interpreter={sys.executable}"],
                            env=playbook_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(result.stdout)
    messages = [item["msg"] for item in report["plays"][0]["tasks"][0]["hosts"]["localhost"]["results"]]
    assert messages == ["vllm", "vllm_Qwen3-4B", "vllm_Qwen3-4B_fast", "vllm"]
