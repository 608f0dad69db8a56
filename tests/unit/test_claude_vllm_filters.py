"""The preflight checks: every misconfiguration from the field notes is refused with variable, symptom and fix."""

from __future__ import annotations

import pytest

from conftest import load_plugin

filters = load_plugin("plugins/filter/claude_vllm.py", "claude_vllm_filters")


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8000", "http://127.0.0.1:8000/", "https://llm.example.com", "http://gpu-01:8000",
    "http://[::1]:8000",
])
def test_good_base_urls_pass(url):
    assert filters.base_url_problem(url) == ""


@pytest.mark.parametrize("url, expected", [
    ("http://127.0.0.1:8000/v1", ["/v1/v1/messages", "Fix: set it to http://127.0.0.1:8000"]),
    ("http://127.0.0.1:8000/v1/", ["/v1/v1/messages"]),
    ("http://gw:8000/llm", ["no path", "Fix: set it to http://gw:8000"]),
    ("http://gw:8000?x=1", ["no path"]),
    ("127.0.0.1:8000", ["http:// or https://"]),
    ("ftp://gpu:8000", ["http:// or https://"]),
    ("http://:8000", ["no host"]),
    ("", ["is empty"]),
    (" http://h:8000", ["whitespace"]),
    ("http://h:99999", ["not a valid URL"]),
])
def test_bad_base_urls_name_variable_symptom_and_fix(url, expected):
    message = filters.base_url_problem(url)
    assert message.startswith("anthropic_base_url")
    for fragment in expected:
        assert fragment in message


def test_trailing_slash_is_normalised_only_once():
    assert filters.normalize_base_url("http://h:8000/") == "http://h:8000"
    assert filters.normalize_base_url("http://h:8000") == "http://h:8000"


@pytest.mark.parametrize("name, fragment", [
    ("", "is empty"), ("Qwen 3.5", "whitespace"), ("Qwen3.5-27B\n", "whitespace"),
    ("Qwen/Qwen3.5-27B", "'Qwen3.5-27B'"), (None, "is empty"),
])
def test_bad_served_names(name, fragment):
    message = filters.served_model_name_problem(name)
    assert message.startswith("served_model_name") and fragment in message


def test_good_served_name():
    assert filters.served_model_name_problem("Qwen3.5-27B") == ""


@pytest.mark.parametrize("alias", ["sonnet", "opus", "haiku"])
def test_aliases(alias):
    assert filters.model_alias_problem(alias) == ""


def test_served_id_as_alias_explains_the_catalogue_check():
    message = filters.model_alias_problem("Qwen3.5-27B")
    assert "There's an issue with the selected model (Qwen3.5-27B)" in message
    assert "sonnet" in message


@pytest.mark.parametrize("context, expected", [(65536, 32000), (32768, 7768), (200000, 32000), (20000, 0)])
def test_output_budget_fits_the_context(context, expected):
    assert filters.claude_max_output_tokens(context, 25000) == expected


def test_small_context_is_refused_with_the_size_needed():
    message = filters.output_tokens_problem(8192, 25000)
    assert message.startswith("vllm_max_model_len") and "at least 29096" in message
    assert filters.output_tokens_problem(32768, 25000) == ""


def test_explicit_output_budget_must_fit():
    assert filters.max_output_tokens_problem(7000, 32768, 25000) == ""
    assert "at most 7768" in filters.max_output_tokens_problem(32000, 32768, 25000)
    assert "at least 1" in filters.max_output_tokens_problem(0, 32768, 25000)
    assert "whole number" in filters.max_output_tokens_problem("lots", 32768, 25000)


def test_context_window_must_fit_the_server():
    assert filters.context_tokens_problem(65536, 65536) == ""
    assert filters.context_tokens_problem("32768", 65536) == ""
    message = filters.context_tokens_problem(1000000, 65536)
    assert message.startswith("claude_code_max_context_tokens") and "65536" in message
    assert "whole number" in filters.context_tokens_problem("big", 65536)
    assert filters.context_tokens_problem(0, 65536)


def test_token_checks():
    assert filters.token_problem("dummy") == ""
    assert "is empty" in filters.token_problem("")
    assert "is empty" in filters.token_problem("   ")
    assert "whitespace" in filters.token_problem("abc\n")


@pytest.mark.parametrize("token", ["dummy", "sk-fleet.2026_a~b+c/d", "aGVsbG8gd29ybGQ=", "Zm9v==",
                                   "0123456789abcdef" * 4])
def test_bearer_tokens_are_accepted(token):
    assert filters.token_problem(token) == ""


@pytest.mark.parametrize("token, kind", [
    ("ab\\cd", "a backslash"),             # systemd's EnvironmentFile drops it from the server's key
    ('pa"ss', "a quote"),
    ("two words", "whitespace"),
    ("pässwort", "a non-ASCII character"),
    ("p@ss!word", "other punctuation"),
    ("ab=cd", "an '=' before the end"),
])
def test_tokens_outside_the_bearer_syntax_are_refused_without_showing_them(token, kind):
    message = filters.token_problem(token)
    assert kind in message and "llm_api_token" in message and "Fix:" in message
    assert token not in message


def test_users_normalised_and_checked():
    entries = filters.normalize_claude_code_users(["alice", {"name": "bob", "env": {"X": "1"}}, {"env": {}}])
    assert entries[:2] == [{"name": "alice", "env": {}}, {"name": "bob", "env": {"X": "1"}}]
    problems = filters.user_entry_problems(entries, {"alice": [], "carol": []})
    assert any("'bob' does not exist" in p for p in problems)
    assert any("has no user name" in p for p in problems)
    assert not any("alice" in p for p in problems)
    assert filters.user_entry_problems([], {}) and not filters.user_entry_problems([], {}, must_exist=False)


MANAGED = ["ANTHROPIC_BASE_URL", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "ANTHROPIC_AUTH_TOKEN"]
CONFLICTING = ["ANTHROPIC_API_KEY", "ANTHROPIC_MODEL"]


def test_extra_env_keeps_unrelated_keys():
    assert filters.extra_env_problems({"HTTPS_PROXY": "http://proxy:3128"}, MANAGED, CONFLICTING) == []


@pytest.mark.parametrize("env, expected", [
    ({"CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "0"}, ["which the role manages", "must stay \"1\"",
                                                         "Fix: remove CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"]),
    ({"ANTHROPIC_API_KEY": "x"}, ["x-api-key", "401", "llm_api_token", "Fix: remove ANTHROPIC_API_KEY"]),
    ({"ANTHROPIC_MODEL": "x"}, ["overrides the sonnet/opus/haiku aliases"]),
    ({"BASH_MAX_TIMEOUT_MS": 600000}, ["must be a string", "Fix: quote it"]),
])
def test_extra_env_refuses_keys_that_fight_the_fleet(env, expected):
    problems = filters.extra_env_problems(env, MANAGED, CONFLICTING, "claude_code_extra_env")
    assert len(problems) == 1
    assert problems[0].startswith("claude_code_extra_env")
    for part in expected:
        assert part in problems[0]


def test_extra_env_must_be_a_mapping():
    assert "must be a mapping" in filters.extra_env_problems(["A=1"], MANAGED, CONFLICTING)[0]


class FakeHostVars(dict):
    """hostvars as a plain mapping of host -> variables (the real one is a lazy mapping with .get)."""


def test_fleet_agreement_passes_when_every_side_agrees():
    hostvars = FakeHostVars({"gpu-1": {"served_model_name": "Qwen3.5-27B"}, "gpu-2": {"served_model_name": "Qwen3.5-27B"}})
    assert filters.fleet_disagreements(hostvars, ["gpu-1", "gpu-2"], "served_model_name", "Qwen3.5-27B") == ""


def test_fleet_agreement_names_the_host_with_a_one_sided_change():
    hostvars = FakeHostVars({"gpu-1": {"served_model_name": "Qwen3.5-27B"}, "gpu-2": {"served_model_name": "Qwen-v2"},
                             "gpu-3": {}})
    message = filters.fleet_disagreements(hostvars, ["gpu-1", "gpu-2", "gpu-3"], "served_model_name", "Qwen3.5-27B")
    assert "gpu-2 has 'Qwen-v2'" in message and "gpu-3 has '(not set)'" in message
    assert "gpu-1" not in message
    assert "must agree exactly" in message and "group_vars/all" in message


def test_fleet_agreement_compares_numbers_by_value():
    hostvars = FakeHostVars({"gpu-1": {"vllm_max_model_len": "32768"}})
    assert filters.fleet_disagreements(hostvars, ["gpu-1"], "vllm_max_model_len", 32768) == ""


def test_fleet_agreement_does_not_compare_a_host_with_itself():
    hostvars = FakeHostVars({"box": {"vllm_max_model_len": 65536}})
    assert filters.fleet_disagreements(hostvars, ["box"], "vllm_max_model_len", 32768, "box") == ""
    assert "box has 65536" in filters.fleet_disagreements(hostvars, ["box"], "vllm_max_model_len", 32768, "other")
