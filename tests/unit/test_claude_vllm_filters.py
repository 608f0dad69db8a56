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


def test_fleet_agreement_on_an_optional_variable_counts_unset_as_its_default():
    """served_model_tiers: unset, null or {} on the other side is the default {} (an older inventory)."""
    hostvars = FakeHostVars({"ws-1": {}, "ws-2": {"served_model_tiers": None}, "ws-3": {"served_model_tiers": {}}})
    hosts = ["ws-1", "ws-2", "ws-3"]
    assert filters.fleet_disagreements(hostvars, hosts, "served_model_tiers", {}, unset={}) == ""
    message = filters.fleet_disagreements(hostvars, hosts, "served_model_tiers", {"haiku": "Qwen3-4B"}, unset={})
    assert "ws-1 has {}, ws-2 has {}, ws-3 has {}" in message and "group_vars/all" in message
    tiers = FakeHostVars({"ws-1": {"served_model_tiers": {"haiku": "Qwen3-4B"}}})
    assert filters.fleet_disagreements(tiers, ["ws-1"], "served_model_tiers", {"haiku": "Qwen3-4B"}, unset={}) == ""
    assert "ws-1 has {'haiku': 'Qwen3-4B'}" in filters.fleet_disagreements(tiers, ["ws-1"], "served_model_tiers", {},
                                                                           unset={})


# --- Issue 11, item 5: inputs that were accepted and must be refused before any change -----------------------------

@pytest.mark.parametrize("url", [
    "http://fleetuser:s3cr3t-pass@gpu:8000",
    "http://fleetuser@gpu:8000",
    "https://fleetuser:s3cr3t/pass@gpu:8000",         # an unencoded '/' in the password: over-redact, never leak
    "http://fleetuser:s3cr3t-pass@gpu:99999",          # bad port too: the URL parser's error must not echo it
    "fleetuser:s3cr3t-pass@gpu:8000",                  # no scheme
    "http://fleetuser:s3cr3t-pass@gpu:8000/v1",        # a path too
    "http://fleetuser:s3cr3t-pass@gpu:8000\n",         # whitespace too
])
def test_base_url_with_credentials_is_refused_without_showing_them(url):
    message = filters.base_url_problem(url)
    assert message.startswith("anthropic_base_url") and "Fix:" in message
    assert "fleetuser" not in message and "s3cr3t" not in message and "pass@" not in message


def test_base_url_with_credentials_names_the_problem_and_the_token_variable():
    message = filters.base_url_problem("http://fleetuser:s3cr3t-pass@gpu:8000")
    assert "'http://***@gpu:8000'" in message
    assert "credentials" in message and "llm_api_token" in message


@pytest.mark.parametrize("url, shown", [
    ("http://user:pw@h:8000", "http://***@h:8000"),
    ("https://u:p/q@h", "https://***@h"),
    ("u:p@h:8000", "***@h:8000"),
    ("http://h:8000", "http://h:8000"),
    (None, None),
])
def test_redact_url(url, shown):
    assert filters.redact_url(url) == shown


@pytest.mark.parametrize("url", [
    "http://gpu:8000\n",             # a YAML '|' block: the newline was written into settings.json
    "http://gpu:8000\nX-Injected: 1",
    "http://g pu:8000",
    "http://gpu:8000/\t",
    "http://gpu:8000\r",
    "http://gp\x00u:8000",
    "http://gpu\x1b:8000",
    "http://gpu\u200b:8000",         # zero-width space: invisible in the inventory
    "http://gpu:8000\u2028",
])
def test_base_url_with_whitespace_or_control_characters_anywhere_is_refused(url):
    message = filters.base_url_problem(url)
    assert message.startswith("anthropic_base_url") and "control character" in message
    assert "Unable to connect" in message and "Fix:" in message
    assert "\n" not in message and "\x00" not in message  # quoted as Python writes it


@pytest.mark.parametrize("name", [
    "Qwen3.5-27B", "llama-3.1-8b-instruct", "qwen2.5-coder:32b", "gpt-oss-20b", "Mixtral-8x7B+lora",
    "DeepSeek-R1_Distill", "x" * 128, "7b",
])
def test_real_served_ids_pass(name):
    assert filters.served_model_name_problem(name) == ""


@pytest.mark.parametrize("name, shown", [
    ('Qwen"3.5', "'\"'"),            # passed, then broke haproxy.cfg's health check string mid-run
    ("Qwen%i", "'%'"),                # a systemd specifier in the unit
    ("Qwen$HOME", "'$'"),             # expanded by systemd in ExecStart
    ("Qwen'3", "\"'\""),
    ("Qwen\\3", "'\\\\'"),
    ("Qwen\x07", "'\\x07'"),
    ("Qwen\x7f", "'\\x7f'"),
    ("Qwén", "'é'"),
    ("Qwen\u200b3", "'\\u200b'"),
    ("Qwen#3", "'#'"),
    ("Qwen;3", "';'"),
    ("Qwen=3", "'='"),
    ("-Qwen", "a leading '-'"),       # read as an option by vLLM's argument parser
    (".Qwen", "a leading '.'"),
])
def test_served_names_outside_the_charset_are_refused(name, shown):
    message = filters.served_model_name_problem(name)
    assert message.startswith("served_model_name") and shown in message, message
    assert "letters, digits and . _ - : +" in message and "haproxy -c" in message and "Fix:" in message


def test_absurdly_long_served_name_is_refused_and_not_printed_whole():
    name = "Qwen" + "x" * 125
    message = filters.served_model_name_problem(name)
    assert message.startswith("served_model_name") and "longer than 128 characters" in message
    assert name not in message and "(129 characters)" in message


def test_non_string_served_name_says_so():
    assert "not a string" in filters.served_model_name_problem(27)


PASSWD = {
    "root": ["x", "0", "0", "root", "/root", "/bin/bash"],
    "daemon": ["x", "1", "1", "daemon", "/usr/sbin", "/usr/sbin/nologin"],
    "bin": ["x", "2", "2", "bin", "/bin", "/usr/sbin/nologin"],
    "www-data": ["x", "33", "33", "www-data", "/var/www", "/usr/sbin/nologin"],
    "nobody": ["x", "65534", "65534", "nobody", "/nonexistent", "/usr/sbin/nologin"],
    "alice": ["x", "1000", "1000", "", "/home/alice", "/bin/bash"],
    "bob": ["x", "1001", "1001", "", "/home/bob", "/bin/bash"],
    "ops": ["x", "600", "600", "", "/home/ops", "/bin/bash"],
    "slash": ["x", "1002", "1002", "", "/", "/bin/bash"],
    "dotslash": ["x", "1003", "1003", "", "/.", "/bin/bash"],
    "relative": ["x", "1004", "1004", "", "home/relative", "/bin/bash"],
    "alice2": ["x", "1005", "1005", "", "/home/alice/", "/bin/bash"],
}


def user_problems(users, **kwargs):
    return filters.user_entry_problems(filters.normalize_claude_code_users(users), PASSWD, **kwargs)


@pytest.mark.parametrize("users", [["alice", "alice"], ["alice", {"name": "alice", "env": {"X": "1"}}],
                                   [{"name": "alice"}, {"name": "alice", "env": {}}, "alice"]])
def test_duplicate_users_are_refused_once(users):
    problems = user_problems(users)
    assert len(problems) == 1, problems
    assert problems[0].startswith("claude_code_users") and "'alice'" in problems[0]
    assert f"{len(users)} times" in problems[0] and "changed" in problems[0] and "Fix:" in problems[0]


@pytest.mark.parametrize("item, key, hint", [
    ({"name": "alice", "envv": {"GITHUB_TOKEN": "ghp_secretvalue"}}, "'envv'", "'envv' -> 'env'"),
    ({"name": "alice", "Env": {}}, "'Env'", "'Env' -> 'env'"),
    ({"name": "alice", "env": {}, "shell": "/bin/zsh"}, "'shell'", "remove them"),
    ({"user": "alice"}, "'user'", "remove them"),
])
def test_unknown_keys_in_a_user_item_are_refused(item, key, hint):
    problems = user_problems([item])
    assert len(problems) == 1, problems
    assert problems[0].startswith("claude_code_users") and key in problems[0] and hint in problems[0]
    assert "only 'name' and 'env'" in problems[0] and "ghp_secretvalue" not in problems[0]


def test_a_user_item_without_a_name_does_not_show_its_env():
    problems = user_problems([{"env": {"GITHUB_TOKEN": "ghp_secretvalue"}}])
    assert len(problems) == 1 and "has no user name" in problems[0] and "ghp_secretvalue" not in problems[0]


@pytest.mark.parametrize("user, fragments", [
    ("bin", ["'bin' is a system account (uid 2, below claude_code_user_uid_min 1000)", "/bin/.claude/settings.json",
             "lower claude_code_user_uid_min"]),
    ("daemon", ["uid 1,"]),
    ("www-data", ["uid 33,"]),
    ("nobody", ["overflow account (uid 65534", "/nonexistent/.claude"]),
    ("slash", ["home directory '/'"]),
    ("dotslash", ["home directory '/'"]),
    ("relative", ["'home/relative', not an absolute path"]),
])
def test_system_accounts_and_homeless_users_are_refused(user, fragments):
    for scope_must_exist in (True, False):  # user scope and managed scope (the smoke test still runs as the user)
        problems = user_problems([user], must_exist=scope_must_exist)
        assert len(problems) == 1, problems
        assert problems[0].startswith("claude_code_users") and "Fix:" in problems[0]
        for fragment in fragments:
            assert fragment in problems[0], problems[0]


def test_root_and_people_are_accepted():
    assert user_problems(["root", "alice", "bob"]) == []


def test_the_uid_minimum_is_a_variable():
    assert user_problems(["ops"]) and user_problems(["ops"], uid_min=500) == []
    assert "overflow account" in user_problems(["nobody"], uid_min=0)[0]  # whatever the minimum


def test_users_sharing_a_home_are_refused():
    problems = user_problems(["alice", "bob", "alice2"])
    assert len(problems) == 1, problems
    assert "'alice' and 'alice2' share the home directory /home/alice" in problems[0] and "Fix:" in problems[0]


def test_uid_minimum_has_a_default_and_an_argument_spec(repo):
    import yaml
    defaults = yaml.safe_load((repo / "roles/claude_code/defaults/main.yml").read_text())
    specs = yaml.safe_load((repo / "roles/claude_code/meta/argument_specs.yml").read_text())
    assert defaults["claude_code_user_uid_min"] == 1000
    assert specs["argument_specs"]["main"]["options"]["claude_code_user_uid_min"]["default"] == 1000
    assert 'claude_code_user_uid_min: "{{ claude_code_user_uid_min }}"' in (repo / "roles/claude_code/tasks/validate.yml").read_text()


@pytest.mark.parametrize("key", ["BAD KEY=x", "", "1ABC", "A=B", "HTTP-PROXY", "naïve", " PATH", 5])
def test_env_keys_must_be_variable_names(key):
    problems = filters.extra_env_problems({key: "1"}, MANAGED, CONFLICTING, "claude_code_extra_env")
    assert len(problems) == 1, problems
    assert problems[0].startswith("claude_code_extra_env") and "is not an environment variable name" in problems[0]
    assert "Fix: rename it" in problems[0]


@pytest.mark.parametrize("value", [{"token": "ghp_secretvalue"}, ["ghp_secretvalue", "b"]])
def test_env_values_that_are_not_scalars_are_refused_without_showing_them(value):
    problems = filters.extra_env_problems({"GITHUB_TOKEN": value}, MANAGED, CONFLICTING, "claude_code_extra_env")
    assert len(problems) == 1 and problems[0].startswith("claude_code_extra_env.GITHUB_TOKEN")
    assert "not a string" in problems[0] and "ghp_secretvalue" not in problems[0]


@pytest.mark.parametrize("value", ["ghp_secret\x00value", "ghp_secret\nvalue", "ghp_secret\rvalue", "ghp\x1bsecret"])
def test_env_values_with_nul_or_newline_are_refused_without_showing_them(value):
    problems = filters.extra_env_problems({"GITHUB_TOKEN": value}, MANAGED, CONFLICTING, "claude_code_extra_env")
    assert len(problems) == 1 and problems[0].startswith("claude_code_extra_env.GITHUB_TOKEN")
    assert "control character" in problems[0] and "ghp" not in problems[0].split(".GITHUB_TOKEN", 1)[1]


def test_env_value_with_a_tab_is_kept():
    assert filters.extra_env_problems({"X": "a\tb"}, MANAGED, CONFLICTING) == []


def test_users_env_is_checked_per_user_and_names_the_user():
    entries = filters.normalize_claude_code_users([{"name": "alice", "env": {"BAD KEY=x": "1", "V": "a\nb"}}, "bob"])
    problems = filters.users_env_problems(entries, MANAGED, CONFLICTING)
    assert len(problems) == 2 and all(p.startswith("claude_code_users[alice].env") for p in problems), problems


@pytest.mark.parametrize("value", [1e12, "1e12", "big", "64k", True, False, -1, 0, 65536.5, 65536.0, None, " 65536",
                                   10_000_001, [65536]])
def test_max_model_len_must_be_a_positive_whole_number(value):
    message = filters.max_model_len_problem(value)
    assert message.startswith("vllm_max_model_len") and "Fix:" in message


def test_max_model_len_1e12_is_refused_with_what_vllm_would_have_been_given():
    assert "--max-model-len '1000000000000.0'" in filters.max_model_len_problem(1e12)


@pytest.mark.parametrize("value", [65536, "65536", 1, 10_000_000])
def test_good_max_model_len(value):
    assert filters.max_model_len_problem(value) == ""


@pytest.mark.parametrize("value", ["big", 1e12, True, None])
def test_a_bad_max_model_len_gives_one_message_not_a_traceback(value):
    # the role default claude_code_max_output_tokens is computed while the role's arguments are read: no crash
    assert filters.claude_max_output_tokens(value, 25000) == 0
    assert filters.output_tokens_problem(value, 25000) == ""  # max_model_len_problem is the one message
    derived = filters.claude_max_output_tokens(value, 25000)
    assert filters.max_output_tokens_problem(derived, value, 25000) == ""
    assert filters.context_tokens_problem(value, value) == ""


@pytest.mark.parametrize("port", [70000, 0, -1, "abc", True, False, 8000.0, None, "80 80", "", 65536])
def test_bad_vllm_port_is_named(port):
    message = filters.port_problem(port)
    assert message.startswith("vllm_port") and "between 1 and 65535" in message and "Fix:" in message


@pytest.mark.parametrize("port", [8000, "8000", 1, 65535])
def test_good_ports(port):
    assert filters.port_problem(port) == ""


def test_gateway_servers_keep_a_bad_port_for_the_check_instead_of_crashing():
    instances = load_plugin("plugins/filter/vllm_instances.py", "vllm_instances_filters")
    servers = instances.gateway_servers({"gpu-a": {"vllm_port": "abc"}}, ["gpu-a"], 8000)
    assert servers[0]["port"] == "abc"
    problems = filters.gateway_server_problems(servers)
    assert len(problems) == 1 and "gpu-a-main" in problems[0] and "between 1 and 65535" in problems[0]
    assert filters.gateway_server_problems(servers, "abc") == []  # named once, as vllm_port


@pytest.mark.parametrize("server, fragment", [
    ({"name": "gpu a-main", "host": "gpu a", "address": "10.0.0.5", "port": 8000}, "server name"),
    ({"name": "gpu-a-main", "host": "gpu-a", "address": "10.0.0.5 #x", "port": 8000}, "ansible_host of 'gpu-a'"),
    ({"name": "gpu-a-main", "host": "gpu-a", "address": "10.0.0.5", "port": 70000}, "gateway server gpu-a-main"),
])
def test_gateway_server_lines_are_checked_before_haproxy_c(server, fragment):
    problems = filters.gateway_server_problems([server])
    assert len(problems) == 1 and fragment in problems[0] and "Fix:" in problems[0]


def test_gateway_words_and_times():
    assert filters.haproxy_time_problem("50m", "gateway_timeout_client") == ""
    assert filters.haproxy_time_problem(5000, "gateway_timeout_client") == ""
    assert "gateway_timeout_client" in filters.haproxy_time_problem("50 min", "gateway_timeout_client")
    assert filters.haproxy_time_problem(True, "t")
    assert filters.haproxy_word_problem("/run/haproxy/admin.sock", "gateway_admin_socket", "path") == ""
    assert "gateway_admin_socket" in filters.haproxy_word_problem("/run/ha proxy", "gateway_admin_socket", "path")
    assert filters.haproxy_word_problem("run/admin.sock", "gateway_admin_socket", "path")
    assert filters.haproxy_word_problem("*", "gateway_bind_address") == ""
    assert filters.haproxy_word_problem("::", "gateway_bind_address") == ""
    assert filters.haproxy_word_problem("127.0.0.1:8404 #", "gateway_stats_listen")
    assert filters.haproxy_count_problem(2, "gateway_health_check_fall", 1) == ""
    assert "at least 1" in filters.haproxy_count_problem(0, "gateway_health_check_fall", 1)


@pytest.mark.parametrize("value", [-1, "-1", "x", 1.5, True, None, [], "3 "])
def test_whole_number_problem_refuses_what_is_not_a_count(value):
    message = filters.whole_number_problem(value, "claude_code_backup_keep", 0, 3)
    assert message.startswith("claude_code_backup_keep (") and "Fix: set e.g. 3" in message


@pytest.mark.parametrize("value", [0, 3, "3"])
def test_whole_number_problem_accepts_counts(value):
    assert filters.whole_number_problem(value, "claude_code_backup_keep", 0) == ""
