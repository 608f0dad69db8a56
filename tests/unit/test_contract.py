"""The fleet contract (plugins/module_utils/fleet_contract.py) is the one home of every field-notes rule and every
name two roles must agree on: these tests fail, in seconds, when a second place disagrees with it."""

from __future__ import annotations

import re
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader

import pytest
import yaml

from conftest import REPO, load_plugin

from ansible_collections.claude_vllm.fleet.plugins.module_utils import fleet_contract as contract

preflight = load_plugin("plugins/filter/preflight.py", "preflight_filters")


def load_doctor():
    loader = SourceFileLoader("claude_vllm_doctor_contract", str(REPO / "tools/claude-vllm-doctor"))
    module = module_from_spec(spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


doctor = load_doctor()
ROLE_YAML = [p for role in ("vllm", "gateway", "claude_code", "nvidia_cuda")
             for kind in ("tasks", "handlers", "vars", "defaults", "templates")
             for p in sorted((REPO / "roles" / role / kind).glob("*")) if p.is_file()]
FLEET_YAML = ROLE_YAML + sorted((REPO / "playbooks").glob("*.yml")) + sorted((REPO / "inventory").rglob("*.yml"))
PLUGINS = [p for p in sorted((REPO / "plugins").rglob("*.py")) if p.name != "fleet_contract.py"]


# ------------------------------------------------------------------ the doctor's copy (one stdlib file)
def test_doctor_knows_the_same_tier_aliases_and_their_variables():
    assert set(doctor.ALIASES) == set(contract.MODEL_ALIASES)
    assert set(doctor.TIER_KEYS.values()) == set(contract.tier_model_env("x"))


def test_doctor_sizes_the_output_budget_with_the_same_numbers():
    assert doctor.PROMPT_RESERVE == contract.PROMPT_TOKEN_RESERVE
    assert doctor.DEFAULT_MAX_OUTPUT_TOKENS == contract.CLAUDE_CODE_DEFAULT_MAX_OUTPUT_TOKENS


BASE_URLS = ["http://gpu-01:8000", "https://gw.example:443", "http://gpu-01:8000/", "http://gpu-01:8000/v1",
             "http://gpu-01:8000/v1/", "http://gpu-01:8000/api", "http://gpu-01:8000?x=1", "gpu-01:8000",
             "ftp://gpu-01:8000", "", " http://gpu-01:8000", "http://gpu 01:8000", "http://:8000",
             "http://[::1]:8000", "http://10.0.0.5:8000"]


@pytest.mark.parametrize("url", BASE_URLS)
def test_doctor_and_the_roles_agree_on_every_base_url(url):
    """The role refuses a base URL exactly when the doctor reports it as an error on a workstation."""
    report = doctor.Report()
    doctor.check_base_url(report, {"ANTHROPIC_BASE_URL": (url, ("settings", "user"))}, "Qwen3.5-27B")
    report.record_held()  # a path finding waits for the server's evidence; none here
    assert report.has_error() == bool(contract.base_url_problem(url)), (url, report.findings)


# ------------------------------------------------------------------ contract values written nowhere else
@pytest.mark.parametrize("literal, home, plugins_too", [
    (re.compile(r"\b25000\b"), "PROMPT_TOKEN_RESERVE", True),
    (re.compile(r"/run/haproxy/admin\.sock"), "GATEWAY_ADMIN_SOCKET", True),
    (re.compile(r"^\s*backend:? +vllm\b", re.M), "GATEWAY_BACKEND", False),  # module EXAMPLES may show it
    (re.compile(r"ANTHROPIC_DEFAULT_(OPUS|SONNET|HAIKU)_MODEL"), "MODEL_ALIASES (tier_model_env)", False),
    (re.compile(r"\}\}-\{\{ *item\.1\.name"), "gateway_server_name", False),
])
def test_contract_values_are_not_written_again(literal, home, plugins_too):
    """Roles, playbooks, the inventory and the other plugins read these from the contract, never as literals."""
    found = [f"{path.relative_to(REPO)}:{text[:match.start()].count(chr(10)) + 1}"
             for path in FLEET_YAML + (PLUGINS if plugins_too else []) for text in [path.read_text()]
             for match in literal.finditer("\n".join(line for line in text.splitlines()
                                                     if not line.lstrip().startswith("#")))]
    assert found == [], f"write these through the contract's {home} instead"


def test_the_default_instance_is_the_contracts():
    defaults = yaml.safe_load((REPO / "roles/vllm/defaults/main.yml").read_text())
    specs = yaml.safe_load((REPO / "roles/vllm/meta/argument_specs.yml").read_text())
    assert defaults["vllm_instances"] == [{"name": contract.DEFAULT_INSTANCE}]
    assert specs["argument_specs"]["main"]["options"]["vllm_instances"]["default"] == [
        {"name": contract.DEFAULT_INSTANCE}]


# ------------------------------------------------------------------ every rule runs somewhere
def preflight_inputs(role):
    """The keys of the dict a role's validate.yml passes to its preflight filter."""
    for task in yaml.safe_load((REPO / f"roles/{role}/tasks/validate.yml").read_text()):
        for name, value in (task.get("vars") or {}).items():
            if name.endswith("_preflight_inputs"):
                return set(value)
    return set()


ROLE_INPUTS = {role: preflight_inputs(role) for role in ("vllm", "gateway", "claude_code")}


def test_every_role_passes_its_inputs_to_a_preflight_filter():
    assert all(ROLE_INPUTS.values()), ROLE_INPUTS


@pytest.mark.parametrize("rule", [function.__name__ for function, _ in contract.RULES])
def test_every_field_notes_rule_runs_in_some_role(rule):
    inputs = dict((function.__name__, names) for function, names in contract.RULES)[rule]
    assert [role for role, keys in ROLE_INPUTS.items() if set(inputs) <= keys], (
        f"no role's preflight passes all of {inputs}: add them to a role's *_preflight_inputs")


@pytest.mark.parametrize("role, inputs", [
    ("vllm", {"served_model_name"}), ("gateway", {"served_model_name", "vllm_port"}),
    ("claude_code", {"served_model_name", "anthropic_base_url", "vllm_port", "claude_code_model_alias",
                     "vllm_max_model_len", "claude_code_prompt_token_reserve", "llm_api_token"}),
    ("vllm", {"vllm_max_model_len", "claude_code_prompt_token_reserve", "vllm_enable_tool_calling",
              "vllm_tool_call_parser"}),
])
def test_roles_that_write_a_setting_check_it(role, inputs):
    """Each role that writes the served name (unit, haproxy.cfg, settings.json) runs its rules."""
    assert inputs <= ROLE_INPUTS[role]


def test_a_new_rule_runs_wherever_its_inputs_are_passed(monkeypatch):
    rules = list(contract.RULES)
    monkeypatch.setattr(contract, "RULES", rules)
    contract.rule("served_model_name")(lambda name: "served_model_name: no Qwen. Fix: ..." if "Qwen" not in name
                                       else "")
    assert contract.fleet_rule_problems({"served_model_name": "llama"}) == ["served_model_name: no Qwen. Fix: ..."]
    assert contract.fleet_rule_problems({"vllm_port": 8000}) == []


# ------------------------------------------------------------------ the base URL the inventory derives
@pytest.mark.parametrize("groups, hostvars, expected", [
    ({}, {}, "http://127.0.0.1:8000"),
    ({"gpu_hosts": ["gpu-a", "gpu-b"]}, {"gpu-a": {"ansible_host": "10.0.0.5"}}, "http://10.0.0.5:8000"),
    ({"gpu_hosts": ["gpu-a"], "gateways": ["gw"]}, {"gw": {"gateway_port": 443, "gateway_tls_certificate": "PEM"}},
     "https://gw:443"),
    ({"gpu_hosts": ["gpu-a"], "gateways": ["gw"]}, {"gw": {"ansible_host": "10.0.0.9"}}, "http://10.0.0.9:8000"),
])
def test_the_inventory_derives_a_root_base_url_the_rules_accept(groups, hostvars, expected):
    url = contract.fleet_base_url(groups, hostvars, 8000)
    assert url == expected and contract.base_url_problem(url) == ""


def test_the_bundled_inventory_uses_the_contracts_base_url():
    shared = yaml.safe_load((REPO / "inventory/default/group_vars/all.yml").read_text())
    assert "claude_vllm.fleet.fleet_base_url" in shared["anthropic_base_url"]


# ------------------------------------------------------------------ tiers on their own served names
def test_without_tiers_every_tier_is_the_served_name():
    assert contract.fleet_tier_names("big", {}) == {"sonnet": "big", "opus": "big", "haiku": "big"}
    assert contract.fleet_tier_names("big", None) == contract.fleet_tier_names("big", {})
    assert contract.fleet_served_names("big", {}) == ["big"]
    assert contract.tier_model_env("big") == {f"ANTHROPIC_DEFAULT_{a.upper()}_MODEL": "big"
                                              for a in contract.MODEL_ALIASES}


def test_a_tier_of_its_own_gets_its_name_and_the_others_keep_the_served_name():
    assert contract.fleet_tier_names("big", {"haiku": "small"}) == {"sonnet": "big", "opus": "big", "haiku": "small"}
    assert contract.fleet_served_names("big", {"haiku": "small", "opus": "big"}) == ["big", "small"]
    assert contract.fleet_served_names("big", {"opus": "huge", "haiku": "small"}) == ["big", "huge", "small"]
    assert contract.tier_model_env("big", {"haiku": "small"})["ANTHROPIC_DEFAULT_HAIKU_MODEL"] == "small"
    assert contract.tier_model_env("big", {"haiku": "small"})["ANTHROPIC_DEFAULT_SONNET_MODEL"] == "big"


@pytest.mark.parametrize("tiers, fragment", [
    ({"mini": "small"}, "'mini', which is not a tier alias"),
    ({"haiku": "Qwen/Qwen3-4B"}, "served_model_tiers.haiku ('Qwen/Qwen3-4B') contains '/'"),
    ({"haiku": ""}, "served_model_tiers.haiku is empty"),
    (["haiku", "small"], "must be a mapping of tier alias to served name"),
])
def test_bad_tiers_are_refused_naming_the_entry(tiers, fragment):
    problems = contract.served_model_tiers_problems(tiers)
    assert len(problems) == 1 and fragment in problems[0], problems


def test_good_tiers_have_no_problem():
    assert contract.served_model_tiers_problems({}) == []
    assert contract.served_model_tiers_problems({"haiku": "Qwen3-4B", "opus": "Qwen3.5-27B"}) == []


# ------------------------------------------------------------------ the gateway's backend per served name
def test_the_served_model_names_backend_is_the_gateways_backend_of_before():
    assert contract.gateway_backend_name("Qwen3.5-27B", "Qwen3.5-27B") == contract.GATEWAY_BACKEND == "vllm"


@pytest.mark.parametrize("name, backend", [
    ("Qwen3-4B", "vllm_Qwen3-4B"),
    ("qwen2.5-coder:1.5b", "vllm_qwen2.5-coder:1.5b"),
    ("Qwen3-4B+fast", "vllm_Qwen3-4B_fast"),  # '+' is the one served-id character HAProxy refuses in a name
    ("a+b+c", "vllm_a_b_c"),
])
def test_another_names_backend_is_vllm_and_the_name_in_haproxys_characters(name, backend):
    assert contract.gateway_backend_name(name, "Qwen3.5-27B") == backend
    assert re.fullmatch(r"[A-Za-z0-9_.:-]+", backend)
    assert contract.served_model_name_problem(name) == ""


def test_names_that_would_share_a_backend_are_found():
    served = "Qwen3.5-27B"
    assert contract.gateway_backend_collisions([served, "Qwen3-4B"], served) == []
    assert contract.gateway_backend_collisions([served, "a+b", "a_b"], served) == [
        ("vllm_a_b", ["a+b", "a_b"]), ("vllm_a_b_no_session", ["a+b", "a_b"])]
    # the unkeyed twins (gateway_balance affinity) count too, and only then
    assert contract.gateway_backend_collisions([served, "x", "x_no_session"], served) == [
        ("vllm_x_no_session", ["x", "x_no_session"])]
    assert contract.gateway_backend_collisions([served, "x", "x_no_session"], served, unkeyed=False) == []
    assert contract.gateway_backend_collisions([served, "no_session"], served) == [
        ("vllm_no_session", [served, "no_session"])]
    assert contract.gateway_backend_collisions([served, served], served) == []  # one name listed twice


def test_the_unkeyed_suffix_is_the_gateway_roles():
    variables = yaml.safe_load((REPO / "roles/gateway/vars/main.yml").read_text())
    assert "'gateway_unkeyed_suffix'" in variables["__gateway_unkeyed_backend"]
    assert contract.CONTRACT["gateway_unkeyed_suffix"] == contract.GATEWAY_UNKEYED_SUFFIX == "_no_session"
