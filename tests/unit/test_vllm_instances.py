"""The vllm role's instance list: defaults filled in, bad instances refused with a fix."""

from __future__ import annotations

from conftest import load_plugin

instances = load_plugin("plugins/filter/vllm_instances.py", "vllm_instances_filters")


def test_defaults_are_filled_in_and_units_named():
    result = instances.vllm_normalize_instances([{"name": "main"}, {"name": "b", "port": 8001, "model": "/m"}],
                                                port=8000, model="Qwen/Qwen3.5-27B", tensor_parallel_size=2)
    assert result[0] == {"name": "main", "port": 8000, "model": "Qwen/Qwen3.5-27B", "tensor_parallel_size": 2,
                         "tool_call_parser": "", "cuda_visible_devices": "", "extra_args": [], "extra_env": {},
                         "unit": "vllm-main.service"}
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
