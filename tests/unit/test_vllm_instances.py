"""The vllm role's instance list: defaults filled in, bad instances refused with a fix."""

from __future__ import annotations

from conftest import load_plugin

instances = load_plugin("plugins/filter/vllm_instances.py", "vllm_instances_filters")


def test_defaults_are_filled_in_and_units_named():
    result = instances.vllm_normalize_instances([{"name": "main"}, {"name": "b", "port": 8001, "model": "/m"}],
                                                port=8000, model="Qwen/Qwen3.5-27B", tensor_parallel_size=2,
                                                served_model_name="Qwen3.5-27B")
    assert result[0] == {"name": "main", "port": 8000, "model": "Qwen/Qwen3.5-27B", "tensor_parallel_size": 2,
                         "served_model_name": "Qwen3.5-27B", "tool_call_parser": "", "cuda_visible_devices": "",
                         "extra_args": [], "extra_env": {}, "unit": "vllm-main.service"}
    assert result[1]["port"] == 8001 and result[1]["model"] == "/m" and result[1]["unit"] == "vllm-b.service"


def test_good_instances_pass():
    good = instances.vllm_normalize_instances([{"name": "main"}, {"name": "coder-2", "port": "8001"}], model="m",
                                              tool_call_parser="qwen3_coder")
    assert instances.vllm_instance_problems(good) == []


def problems_for(*items, **defaults):
    defaults.setdefault("model", "m")
    defaults.setdefault("tool_call_parser", "qwen3_coder")
    return " ".join(instances.vllm_instance_problems(instances.vllm_normalize_instances(list(items), **defaults)))


def test_bad_ports():
    assert "between 1 and 65535" in problems_for({"name": "a", "port": 70000})
    assert "between 1 and 65535" in problems_for({"name": "a", "port": 0})
    assert "between 1 and 65535" in problems_for({"name": "a", "port": "80a"})
    assert "used by two instances" in problems_for({"name": "a"}, {"name": "b"})


def test_bad_names_and_duplicates():
    assert "becomes the unit" in problems_for({"name": "my model"}, port=1)
    assert "used twice" in problems_for({"name": "a", "port": 1}, {"name": "a", "port": 2})


def test_missing_model_and_bad_extras():
    assert "no model" in problems_for({"name": "a"}, model="")
    assert "extra_args must be a list" in problems_for({"name": "a", "extra_args": "--foo"})
    assert "extra_env must be a mapping" in problems_for({"name": "a", "extra_env": ["X=1"]})


def test_an_instance_may_have_its_own_tool_call_parser():
    result = instances.vllm_normalize_instances([{"name": "main"}, {"name": "json", "port": 8001,
                                                                     "tool_call_parser": "hermes"}],
                                                model="m", tool_call_parser="qwen3_coder")
    assert [i["tool_call_parser"] for i in result] == ["qwen3_coder", "hermes"]
    assert instances.vllm_instance_problems(result) == []
    for bad in ("", "her mes", 5, None):
        assert "vllm_instances[a].tool_call_parser" in problems_for({"name": "a", "tool_call_parser": bad})
    # without tool calling no instance needs one
    plain = instances.vllm_normalize_instances([{"name": "a"}], model="m", tool_call_parser="")
    assert instances.vllm_instance_problems(plain, tool_calling=False) == []


def test_empty_list_is_refused():
    assert "vllm_instances is empty" in instances.vllm_instance_problems([])[0]


def test_missing_model_message_names_path_host_and_fix():
    message = instances.vllm_missing_model_problem("/srv/models/q", "gpu-01")
    assert "/srv/models/q" in message and "gpu-01" in message and "Fix:" in message


# ------------------------------------------------------------------ tiers on their own served names
def test_an_instance_keeps_its_own_served_name_and_the_others_get_the_shared_one():
    result = instances.vllm_normalize_instances(
        [{"name": "big"}, {"name": "small", "port": 8001, "served_model_name": "Qwen3-4B"},
         {"name": "blank", "port": 8002, "served_model_name": ""}], model="m", served_model_name="Qwen3.5-27B")
    assert [i["served_model_name"] for i in result] == ["Qwen3.5-27B", "Qwen3-4B", "Qwen3.5-27B"]


def tier_problems(tiers, gpu_hostvars, **kwargs):
    return instances.fleet_tier_problems(gpu_hostvars, list(gpu_hostvars), "Qwen3.5-27B", tiers, **kwargs)


BIG_AND_SMALL = {"gpu-a": {}, "gpu-b": {"vllm_instances": [{"name": "small", "served_model_name": "Qwen3-4B"}]}}


def test_every_tier_served_somewhere_passes():
    assert tier_problems({"haiku": "Qwen3-4B"}, BIG_AND_SMALL) == []
    # the small model on a second instance of the same host
    one_host = {"gpu-a": {"vllm_instances": [{"name": "main"}, {"name": "small", "port": 8001,
                                                                "served_model_name": "Qwen3-4B"}]}}
    assert tier_problems({"haiku": "Qwen3-4B"}, one_host) == []


def test_a_tier_no_instance_serves_is_refused_naming_the_tier_and_the_fix():
    (problem,) = tier_problems({"haiku": "Qwen3-4B"}, {"gpu-a": {}, "gpu-b": {}})
    assert problem.startswith("served_model_tiers.haiku: the haiku tier asks for 'Qwen3-4B', but no vLLM instance "
                              "of any host of gpu_hosts serves it (they serve 'Qwen3.5-27B' on gpu-a-main, "
                              "gpu-b-main)")
    assert "Fix: add an instance with served_model_name: Qwen3-4B" in problem
    assert "remove haiku from served_model_tiers" in problem


def test_the_shared_name_must_still_be_served_when_tiers_are_set():
    everything_small = {"gpu-b": {"vllm_instances": [{"name": "small", "served_model_name": "Qwen3-4B"}]}}
    (problem,) = tier_problems({"haiku": "Qwen3-4B"}, everything_small)
    assert problem.startswith("served_model_name: the sonnet, opus tiers ask for 'Qwen3.5-27B'")
    assert "set served_model_name to a name an instance serves" in problem


def test_two_tiers_on_one_unserved_name_make_one_message():
    (problem,) = tier_problems({"haiku": "Qwen3-4B", "opus": "Qwen3-4B"}, {"gpu-a": {}})
    assert "served_model_tiers.opus and served_model_tiers.haiku: the opus, haiku tiers ask for 'Qwen3-4B'" in problem


def test_without_tiers_or_without_servers_nothing_is_checked():
    assert tier_problems({}, {"gpu-a": {"vllm_instances": [{"name": "x", "served_model_name": "other"}]}}) == []
    assert tier_problems(None, {"gpu-a": {}}) == []
    assert tier_problems({"haiku": "Qwen3-4B"}, {}) == []  # the servers are not in this inventory
    assert tier_problems({"haiku": "Qwen/bad"}, {"gpu-a": {}}) == []  # served_model_tiers' own rule names it


def test_a_multinode_instance_counts_on_its_leader():
    small = {"name": "small", "node_group": "vllm_nodes_small", "served_model_name": "Qwen3-4B"}
    hostvars = {"gpu-a": {}, "lead": {"vllm_instances": [small]}, "work": {"vllm_instances": [small]}}
    groups = {"vllm_nodes_small": ["lead", "work"]}
    assert tier_problems({"haiku": "Qwen3-4B"}, hostvars, groups=groups) == []


def test_this_hosts_own_instances_come_from_the_role_not_the_inventory():
    """The vllm role passes its normalised instances (a play may set vllm_instances, hostvars lacks them)."""
    hostvars = {"gpu-a": {}, "gpu-b": {}}
    assert tier_problems({"haiku": "Qwen3-4B"}, hostvars, this_host="gpu-b", this_names=["Qwen3-4B"]) == []
    (problem,) = tier_problems({"haiku": "Qwen3-4B"}, hostvars, this_host="gpu-b", this_names=["Qwen3.5-27B"])
    assert "'Qwen3.5-27B' on gpu-a-main, gpu-b" in problem


# ------------------------------------------------------------------ tiers need something that routes by model
def routing_problem(url, groups, hostvars=None, tiers=None):
    return instances.fleet_tier_routing_problem(groups, hostvars or {}, url, "Qwen3.5-27B",
                                                {"haiku": "Qwen3-4B"} if tiers is None else tiers)


def test_tiers_of_their_own_without_a_gateway_and_a_server_as_base_url_are_refused():
    problem = routing_problem("http://gpu-a:8000", {"gpu_hosts": ["gpu-a", "gpu-b"], "workstations": ["ws"]})
    assert problem.startswith("served_model_tiers gives tiers served names of their own (haiku 'Qwen3-4B'; the "
                              "others 'Qwen3.5-27B'), but anthropic_base_url (http://gpu-a:8000) is the GPU host "
                              "gpu-a itself and the inventory has no gateway")
    assert "Fix: add a host to the gateways group" in problem
    # by its address too, and the bundled single-machine inventory (localhost)
    assert routing_problem("http://10.0.0.7:8000", {"gpu_hosts": ["gpu-a"]}, {"gpu-a": {"ansible_host": "10.0.0.7"}})
    assert routing_problem("http://127.0.0.1:8000", {"gpu_hosts": ["localhost"]})


def test_a_gateway_or_a_router_of_ones_own_or_no_tiers_pass():
    assert routing_problem("http://gw:8000", {"gpu_hosts": ["gpu-a"], "gateways": ["gw"]}) == ""
    assert routing_problem("http://gpu-a:8000", {"gpu_hosts": ["gpu-a"], "gateways": ["gw"]}) == ""
    assert routing_problem("https://litellm.example.com", {"gpu_hosts": ["gpu-a"]}) == ""
    assert routing_problem("http://gpu-a:8000", {"gpu_hosts": ["gpu-a"]}, tiers={}) == ""
    assert routing_problem("http://gpu-a:8000", {"gpu_hosts": ["gpu-a"]}, tiers={"haiku": "Qwen3.5-27B"}) == ""
