# -*- coding: utf-8 -*-
"""Checks of the settings that must agree between vLLM and Claude Code (the field notes' table).

Each ``*_problem`` filter returns an empty string when the value is fine, or one message that
names the variable, what is wrong, the symptom a user would see, and the fix. Roles collect them
in a preflight task and fail before anything on the host changes.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

DOCUMENTATION = r"""
name: claude_vllm
short_description: Validation and derivation filters for the vLLM <-> Claude Code settings
description:
  - C(base_url_problem), C(served_model_name_problem), C(model_alias_problem),
    C(output_tokens_problem) return an empty string for a good value, else one error message
    naming the variable, the problem, the symptom and the fix.
  - C(normalize_base_url) removes one trailing C(/).
  - C(claude_max_output_tokens) sizes CLAUDE_CODE_MAX_OUTPUT_TOKENS so prompt plus output fit
    the server's context length.
"""

# Claude Code's own default output budget (it asks for max_tokens 32000 per request).
CLAUDE_CODE_DEFAULT_MAX_OUTPUT_TOKENS = 32000
# Smallest output budget that still leaves Claude Code room to answer and call tools.
MIN_USEFUL_OUTPUT_TOKENS = 4096
MODEL_ALIASES = ("sonnet", "opus", "haiku")


def base_url_problem(value, variable="anthropic_base_url"):
    """Claude Code appends /v1/messages itself: the base URL must be scheme://host[:port] only."""
    if not isinstance(value, str) or not value.strip():
        return (f"{variable} is empty. Claude Code needs the vLLM server's root URL. "
                f"Fix: set {variable} to e.g. http://gpu-host:8000")
    url = value.strip()
    if url != value:
        return f"{variable} ({value!r}) has surrounding whitespace. Fix: remove it."
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"{variable} ({url!r}) is not a valid URL ({exc}). Fix: use http://HOST:PORT"
    if parts.scheme not in ("http", "https"):
        return (f"{variable} ({url!r}) must start with http:// or https://; without a scheme Claude "
                f"Code cannot connect (API Error: Unable to connect to API). "
                f"Fix: write it as http://HOST:PORT")
    if not parts.hostname:
        return f"{variable} ({url!r}) has no host. Fix: write it as {parts.scheme}://HOST:PORT"
    if port == 0:
        return f"{variable} ({url!r}) has port 0. Fix: use the port vLLM listens on (vllm_port)."
    path = "" if parts.path == "/" else parts.path  # a lone trailing '/' is normalised away
    if path or parts.query or parts.fragment:
        root = f"{parts.scheme}://{parts.netloc}"
        if re.search(r"/v1/?$", parts.path):
            symptom = ("Claude Code appends /v1/messages itself, so requests go to /v1/v1/messages "
                       "and get 404: the CLI reports \"There's an issue with the selected model\"")
        else:
            symptom = ("Claude Code appends /v1/messages to it, so requests go to a path vLLM does not "
                       "serve and get 404: the CLI reports \"There's an issue with the selected model\"")
        return f"{variable} ({url!r}) must be the server root with no path. {symptom}. Fix: set it to {root}"
    return ""


def normalize_base_url(value):
    """Drop one trailing '/' (harmless, but keeps the written settings canonical)."""
    return value[:-1] if isinstance(value, str) and value.endswith("/") and not value.endswith("//") else value


def served_model_name_problem(value, variable="served_model_name"):
    """The served id must be a flat, exact string both sides can agree on."""
    if not isinstance(value, str) or value == "":
        return (f"{variable} is empty. vLLM's --served-model-name and Claude Code's "
                f"ANTHROPIC_DEFAULT_*_MODEL must be the same non-empty id. Fix: set it, e.g. Qwen3.5-27B")
    if re.search(r"\s", value):
        suggestion = re.sub(r"\s+", "-", value.strip())
        return (f"{variable} ({value!r}) contains whitespace; the ids then never match exactly and "
                f"Claude Code reports \"There's an issue with the selected model\". "
                f"Fix: remove the whitespace, e.g. {suggestion}")
    if "/" in value:
        return (f"{variable} ({value!r}) contains '/'. Served names with '/' do not work with Claude Code "
                f"(the notes' 'Qwen/... vs Qwen3.5-27B' mismatch: model not found, \"There's an issue with "
                f"the selected model\"). Fix: use a flat id such as {value.rsplit('/', 1)[-1]!r}")
    return ""


def model_alias_problem(value, variable="claude_code_model_alias"):
    if value in MODEL_ALIASES:
        return ""
    hint = ""
    if isinstance(value, str) and value:
        hint = (f" Putting the served id itself in \"model\" makes Claude Code validate it against "
                f"Anthropic's catalogue: \"There's an issue with the selected model ({value})\".")
    return (f"{variable} ({value!r}) must be one of {', '.join(MODEL_ALIASES)}.{hint} "
            f"Fix: keep the alias (default sonnet); the served name goes in served_model_name.")


def claude_max_output_tokens(max_model_len, prompt_reserve=25000, cap=CLAUDE_CODE_DEFAULT_MAX_OUTPUT_TOKENS):
    """Output budget so that Claude Code's prompt plus its output fit the context length."""
    return max(0, min(int(cap), int(max_model_len) - int(prompt_reserve)))


def output_tokens_problem(max_model_len, prompt_reserve=25000, variable="vllm_max_model_len"):
    budget = claude_max_output_tokens(max_model_len, prompt_reserve)
    if budget >= MIN_USEFUL_OUTPUT_TOKENS:
        return ""
    needed = int(prompt_reserve) + MIN_USEFUL_OUTPUT_TOKENS
    return (f"{variable} ({max_model_len}) leaves only {budget} output tokens after Claude Code's "
            f"~{prompt_reserve}-token prompt; requests fail with \"API Error: 400 max_completion_tokens=... "
            f"cannot be greater than max_model_len\". Fix: start vLLM with at least {needed} "
            f"(--max-model-len), {int(prompt_reserve) + CLAUDE_CODE_DEFAULT_MAX_OUTPUT_TOKENS} for "
            f"Claude Code's full 32000-token output budget.")


def max_output_tokens_problem(value, max_model_len, prompt_reserve=25000,
                              variable="claude_code_max_output_tokens"):
    """An explicit output budget must be positive and fit next to the prompt in the context."""
    try:
        tokens = int(value)
    except (TypeError, ValueError):
        return f"{variable} ({value!r}) is not a whole number. Fix: set a token count such as 16000, or remove it."
    room = int(max_model_len) - int(prompt_reserve)
    if tokens < 1:
        return f"{variable} ({tokens}) must be at least 1. Fix: remove it to size it from vllm_max_model_len."
    if tokens > room:
        return (f"{variable} ({tokens}) plus Claude Code's ~{prompt_reserve}-token prompt exceeds "
                f"vllm_max_model_len ({max_model_len}): requests fail with \"API Error: 400 "
                f"max_completion_tokens=... cannot be greater than max_model_len\". "
                f"Fix: lower it to at most {max(room, 0)}, or raise vllm_max_model_len.")
    return ""


def context_tokens_problem(value, max_model_len, variable="claude_code_max_context_tokens"):
    """The window Claude Code assumes must not exceed what the server accepts."""
    try:
        tokens = int(value)
    except (TypeError, ValueError):
        return f"{variable} ({value!r}) is not a whole number. Fix: remove it to use vllm_max_model_len."
    if tokens < 1 or tokens > int(max_model_len):
        return (f"{variable} ({tokens}) must be between 1 and vllm_max_model_len ({max_model_len}): with a "
                f"larger window Claude Code does not compact a long conversation before vLLM refuses it "
                f"(\"API Error: 400 ... maximum context length\"). Fix: remove it to use vllm_max_model_len.")
    return ""


BEARER_TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")  # RFC 6750, section 2.1: b64token
TOKEN_CHARACTER_KINDS = (
    ("a backslash", lambda char: char == "\\"),
    ("a quote", lambda char: char in "\"'`"),
    ("whitespace", str.isspace),
    ("a non-ASCII character", lambda char: not char.isascii()),
    ("other punctuation", lambda char: char.isascii() and not char.isalnum() and not char.isspace()
     and char not in "\\\"'`._~+/-="),
)


def _token_character_kinds(token):
    """Name the kinds of characters that keep `token` from being a Bearer token, never the characters."""
    kinds = [kind for kind, test in TOKEN_CHARACTER_KINDS if any(test(char) for char in token)]
    return kinds or ["an '=' before the end"]


def token_problem(value, variable="llm_api_token"):
    if value is None or not str(value).strip():
        return (f"{variable} is empty. Claude Code must send ANTHROPIC_AUTH_TOKEN (an Authorization: Bearer "
                f"header) or vLLM answers 401. Fix: set it (any string such as 'dummy' when the server "
                f"does not enforce one; a real secret from ansible-vault when it does).")
    if str(value) != str(value).strip() or "\n" in str(value):
        return f"{variable} has surrounding whitespace or a newline; the server would reject it. Fix: strip it."
    if not BEARER_TOKEN.fullmatch(str(value)):
        found = ", ".join(_token_character_kinds(str(value)))
        return (f"{variable} holds characters an 'Authorization: Bearer' token cannot carry ({found}; "
                f"the value is not shown). RFC 6750 allows letters, digits and - . _ ~ + / then trailing '='. "
                f"Measured: systemd's EnvironmentFile drops a backslash from the server's key, so Claude Code "
                f"gets \"API Error: 401\"; Node.js refuses non-ASCII header values. "
                f"Fix: use a token such as the output of 'openssl rand -hex 32'.")
    return ""


def normalize_claude_code_users(users):
    """Accept names or {name, env} dicts; return a list of {name, env} dicts (bad items kept for the check)."""
    if isinstance(users, (str, dict)):
        users = [users]
    entries = []
    for item in users or []:
        if isinstance(item, dict):
            entries.append({"name": item.get("name"), "env": item.get("env", {})})
        else:
            entries.append({"name": item, "env": {}})
    return entries


def user_entry_problems(entries, passwd, must_exist=True, variable="claude_code_users"):
    problems = []
    if must_exist and not entries:
        problems.append(f"{variable} is empty: there is nobody to configure. Fix: list at least one user.")
    for entry in entries:
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            problems.append(f"{variable}: item {entry!r} has no user name. Fix: give a name, or {{name: NAME}}.")
            continue
        if not isinstance(entry.get("env"), dict):
            problems.append(f"{variable}: 'env' of user {name!r} must be a mapping of variable names to strings.")
        if must_exist and name not in (passwd or {}):
            problems.append(f"{variable}: user {name!r} does not exist on this host. Fix: create the account "
                            f"first (ansible.builtin.user) or remove it from {variable}.")
    return problems


def extra_env_problems(extra_env, managed_keys, conflicting_keys, variable="claude_code_extra_env"):
    """Keys of an extra env block that would fight the managed settings or break authentication."""
    if not isinstance(extra_env, dict):
        return [f"{variable} must be a mapping of variable names to strings, not {type(extra_env).__name__}."]
    problems = []
    for key in sorted(extra_env):
        if key in (managed_keys or []):
            problems.append(
                f"{variable} sets {key}, which the role manages from the shared variables (the field notes' "
                f"settings that must agree; e.g. CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC must stay \"1\" or the "
                f"CLI keeps calling Anthropic's endpoints). Fix: remove {key} from {variable}; change the shared "
                "variable (served_model_name, anthropic_base_url, vllm_max_model_len, llm_api_token...) instead.")
        elif key in (conflicting_keys or []):
            why = ("Claude Code sends it as x-api-key, which vLLM does not read, so a server that requires a "
                   "token answers 401; the token belongs in llm_api_token (ANTHROPIC_AUTH_TOKEN)"
                   if key == "ANTHROPIC_API_KEY" else
                   "it overrides the sonnet/opus/haiku aliases the fleet maps to the served name")
            problems.append(f"{variable} sets {key}: {why}. Fix: remove {key} from {variable}.")
        elif not isinstance(extra_env[key], str):
            problems.append(f"{variable}.{key} must be a string (settings.json env values are strings), not "
                            f"{extra_env[key]!r}. Fix: quote it.")
    return problems


def fleet_disagreements(hostvars, hosts, variable, local_value, this_host=None):
    """One message naming the hosts of the other side (gpu_hosts or workstations) that disagree with this one.

    Reads each host's own variables through hostvars, so a group_vars or host_vars override on one side
    only is caught before anything changes; "" when every host agrees. this_host (inventory_hostname) is
    skipped: a host in both groups is not compared with itself (its play may set the variable).
    """
    differing = {}
    for host in hosts or []:
        if host == this_host:
            continue
        try:
            values = hostvars[host]
            value = values.get(variable, "(not set)") if hasattr(values, "get") else "(not set)"
        except KeyError:
            continue
        if value != local_value and str(value) != str(local_value):
            differing[host] = value
    if not differing:
        return ""
    listed = ", ".join(f"{host} has {value!r}" for host, value in sorted(differing.items()))
    return (f"{variable} is {local_value!r} here but {listed}: the server side and the client side must agree "
            f"exactly (a name changed on one side only makes the CLI say the model may not exist). Fix: set "
            f"{variable} once for the whole fleet (group_vars/all), not per host or group.")

class FilterModule:
    def filters(self):
        return {
            "base_url_problem": base_url_problem,
            "normalize_base_url": normalize_base_url,
            "served_model_name_problem": served_model_name_problem,
            "model_alias_problem": model_alias_problem,
            "claude_max_output_tokens": claude_max_output_tokens,
            "output_tokens_problem": output_tokens_problem,
            "max_output_tokens_problem": max_output_tokens_problem,
            "token_problem": token_problem,
            "context_tokens_problem": context_tokens_problem,
            "normalize_claude_code_users": normalize_claude_code_users,
            "user_entry_problems": user_entry_problems,
            "extra_env_problems": extra_env_problems,
            "fleet_disagreements": fleet_disagreements,
        }
