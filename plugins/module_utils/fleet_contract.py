# -*- coding: utf-8 -*-
"""The fleet's one home for every field-notes rule and every contract between roles.

Field notes (../shared/seed): the handful of settings that must agree exactly between vLLM, the gateway and
Claude Code. Each rule and each shared name is written here once, and used from here by the filters
(plugins/filter), the modules (plugins/modules, bundled by Ansible), the roles' preflight (through the
filters and the lookup ``claude_vllm.fleet.fleet_contract``) and, for the workstation doctor, which must stay
one stdlib file, by a unit test that proves the doctor's copy equal to this one (tests/unit/test_contract.py).

Standard library only.

To add a field-notes rule: write a function that returns "" for a good value and otherwise one message
(variable, problem, symptom, fix), and register it with ``@rule("input", ...)``: every role whose preflight
passes those inputs runs it (``fleet_rule_problems``), and the unit tests list it.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

# --------------------------------------------------------------------------------------- contracts
# Names the vllm role and the gateway role must agree on. The vllm role drains and re-enables its servers
# in the gateway's backend through the gateway's runtime socket, by the server name the gateway gave them.
GATEWAY_BACKEND = "vllm"
GATEWAY_ADMIN_SOCKET = "/run/haproxy/admin.sock"
# The instance a GPU host runs when vllm_instances is empty (one server on vllm_port).
DEFAULT_INSTANCE = "main"
# Claude Code's own prompt (system prompt plus tool definitions, about 22k tokens, measured): the part of
# the server's context (vllm_max_model_len) that is not left for the answer.
PROMPT_TOKEN_RESERVE = 25000
# The three tier aliases Claude Code resolves through ANTHROPIC_DEFAULT_<TIER>_MODEL.
MODEL_ALIASES = ("sonnet", "opus", "haiku")
# The smoke run's result per workstation and user, written as node-exporter textfile metrics on the monitoring
# host (labels workstation, user) and read by the monitoring role's alert rules and dashboard: 1 or 0, and the
# Unix time of the run.
SMOKE_SUCCESS_METRIC = "claude_vllm_fleet_smoke_success"
SMOKE_TIMESTAMP_METRIC = "claude_vllm_fleet_smoke_last_run_timestamp_seconds"
# Where the smoke run writes them on each monitoring host: the node exporter's textfile directory, which the
# monitoring role passes to the exporter (--collector.textfile.directory).
NODE_EXPORTER_TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
# ... one file per workstation, <prefix><inventory hostname>.prom (the monitoring role prunes those of
# workstations no longer in the inventory).
SMOKE_TEXTFILE_PREFIX = "claude_vllm_fleet_smoke_"
# The workstations the inventory has (labels workstation), written by the monitoring role next to them, so a
# workstation that never reported is seen too.
WORKSTATION_EXPECTED_METRIC = "claude_vllm_fleet_workstation_expected"


def gateway_server_name(host, instance=DEFAULT_INSTANCE):
    """The gateway's name for one vLLM instance: <inventory host>-<instance name>."""
    return f"{host}-{instance}"


# The gateway's second backend for each served name when gateway_balance is affinity (requests without the
# session header, by least connections): the backend's name plus this suffix.
GATEWAY_UNKEYED_SUFFIX = "_no_session"
# What HAProxy allows in a proxy (backend) name: letters, digits and _ . : - (a served id may also carry '+').
GATEWAY_BACKEND_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")


def gateway_backend_name(name, served_model_name):
    """The gateway's backend for the servers of one served name.

    GATEWAY_BACKEND for served_model_name (exactly the backend of a fleet without tiers), else
    GATEWAY_BACKEND + '_' + the name, each character HAProxy refuses in a backend name ('+') replaced by '_'.
    Two names may then share a backend name (Qwen+1 and Qwen_1): gateway_backend_collisions finds them.
    """
    if name == served_model_name:
        return GATEWAY_BACKEND
    return f"{GATEWAY_BACKEND}_{GATEWAY_BACKEND_UNSAFE.sub('_', str(name))}"


def gateway_backend_collisions(names, served_model_name, unkeyed=True):
    """[(backend, [served names])] for each backend name two served names would share.

    unkeyed (gateway_balance affinity): each name's second backend (GATEWAY_UNKEYED_SUFFIX) counts too, so
    'x' and 'x_no_session' collide (vllm_x_no_session).
    """
    owners = {}
    for name in dict.fromkeys(names or []):
        backend = gateway_backend_name(name, served_model_name)
        for candidate in ([backend, backend + GATEWAY_UNKEYED_SUFFIX] if unkeyed else [backend]):
            owners.setdefault(candidate, [])
            if name not in owners[candidate]:
                owners[candidate].append(name)
    return [(backend, owned) for backend, owned in owners.items() if len(owned) > 1]


def fleet_base_url(groups, hostvars, vllm_port):
    """The root URL Claude Code talks to, derived from the inventory: scheme://host:port, never a path.

    The first host of `gateways` when that group has hosts (https when its gateway_tls_certificate is set,
    port gateway_port), else the first host of `gpu_hosts` (or this machine) on vllm_port. The address is
    the host's ansible_host when it has one; localhost is 127.0.0.1.
    """
    gateways = list(groups.get("gateways") or [])
    servers = list(groups.get("gpu_hosts") or [])
    host = gateways[0] if gateways else (servers[0] if servers else "localhost")
    values = hostvars[host] if host in hostvars else {}
    address = "127.0.0.1" if host in ("localhost", "127.0.0.1") else (values.get("ansible_host") or host)
    if gateways:
        scheme = "https" if values.get("gateway_tls_certificate") else "http"
        return f"{scheme}://{address}:{values.get('gateway_port') or vllm_port}"
    return f"http://{address}:{vllm_port}"


def fleet_tier_names(served_model_name, served_model_tiers=None):
    """{tier alias: served name} for every tier alias: served_model_tiers' entry, else served_model_name.

    served_model_tiers (shared, optional, default {}) gives a tier its own served name, e.g. {"haiku": "Qwen3-4B"}
    to send Claude Code's haiku-tier requests to a small model; with it empty every tier is served_model_name.
    """
    tiers = served_model_tiers if isinstance(served_model_tiers, dict) else {}
    return {alias: tiers.get(alias) or served_model_name for alias in MODEL_ALIASES}


def fleet_served_names(served_model_name, served_model_tiers=None):
    """The distinct served names the fleet's tiers ask for: served_model_name first, then the others in tier order."""
    names = [served_model_name]
    for name in fleet_tier_names(served_model_name, served_model_tiers).values():
        if name not in names:
            names.append(name)
    return names


def served_model_tiers_problems(served_model_tiers, variable="served_model_tiers"):
    """Each entry must name a tier alias and a valid served name (served_model_name_problem's rules)."""
    if served_model_tiers in (None, ""):
        return []
    if not isinstance(served_model_tiers, dict):
        return [f"{variable} ({_shorten(served_model_tiers)}) must be a mapping of tier alias to served name, e.g. "
                f"{{haiku: Qwen3-4B}}. Fix: write it as a mapping, or leave it {{}} (every tier is served_model_name)."]
    problems = []
    for alias, name in served_model_tiers.items():
        if alias not in MODEL_ALIASES:
            problems.append(f"{variable} has the key {_shorten(alias)}, which is not a tier alias: Claude Code only "
                            f"resolves {', '.join(MODEL_ALIASES)} through ANTHROPIC_DEFAULT_<TIER>_MODEL. "
                            f"Fix: use one of {', '.join(MODEL_ALIASES)}.")
            continue
        problem = served_model_name_problem(name, f"{variable}.{alias}")
        if problem:
            problems.append(problem)
    return problems


def tier_model_env(served_model_name, served_model_tiers=None):
    """ANTHROPIC_DEFAULT_<TIER>_MODEL for every tier alias: the tier's served name (fleet_tier_names)."""
    return {f"ANTHROPIC_DEFAULT_{alias.upper()}_MODEL": name
            for alias, name in fleet_tier_names(served_model_name, served_model_tiers).items()}


# Claude Code's own default output budget (it asks for max_tokens 32000 per request).
CLAUDE_CODE_DEFAULT_MAX_OUTPUT_TOKENS = 32000
# Smallest output budget that still leaves Claude Code room to answer and call tools.
MIN_USEFUL_OUTPUT_TOKENS = 4096


def redact_url(value):
    """The URL with any user information (user:password@) replaced by ***@, for messages.

    Over-redacts rather than leaks: everything from after "scheme://" up to the LAST '@' of the whole value
    goes, even when a '/' in an unencoded password would make a URL parser see the '@' in the path.
    """
    if not isinstance(value, str) or "@" not in value:
        return value
    start = value.find("//")
    start = start + 2 if start >= 0 else 0
    at = value.rfind("@")
    if at < start:
        return value
    return value[:start] + "***" + value[at:]


def _unsafe_characters(value):
    """Whitespace anywhere, control and other non-printable characters (a newline from a YAML block)."""
    return [char for char in value if char.isspace() or not char.isprintable()]


def base_url_problem(value, variable="anthropic_base_url"):
    """Claude Code appends /v1/messages itself: the base URL must be scheme://host[:port] only."""
    if not isinstance(value, str) or not value.strip():
        return (f"{variable} is empty. Claude Code needs the vLLM server's root URL. "
                f"Fix: set {variable} to e.g. http://gpu-host:8000")
    shown = redact_url(value)
    if _unsafe_characters(value):
        return (f"{variable} ({shown!r}) contains whitespace or a control character (a newline often comes from a "
                f"YAML '|' or '>' block). It would be written into every user's settings.json as is, and URL "
                f"parsers disagree on it (Node.js drops tabs and newlines, other tools stop at them, a space in "
                f"the host makes it invalid): Claude Code, the doctor and the smoke test reach different servers "
                f"or none (API Error: Unable to connect to API). Fix: write it on one line with no spaces, e.g. "
                f"http://HOST:PORT")
    if "@" in value:
        return (f"{variable} ({shown!r}) carries user information (user:password@). Node.js's fetch refuses a URL "
                f"with credentials, so every request of Claude Code fails, and the password would be written in "
                f"clear into every user's settings.json and shown in Ansible's output. Fix: remove the "
                f"'user:password@' part; the server's secret belongs in llm_api_token (sent as "
                f"ANTHROPIC_AUTH_TOKEN, an Authorization: Bearer header).")
    url = value
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"{variable} ({shown!r}) is not a valid URL ({exc}). Fix: use http://HOST:PORT"
    if parts.scheme not in ("http", "https"):
        return (f"{variable} ({shown!r}) must start with http:// or https://; without a scheme Claude "
                f"Code cannot connect (API Error: Unable to connect to API). "
                f"Fix: write it as http://HOST:PORT")
    if not parts.hostname:
        return f"{variable} ({shown!r}) has no host. Fix: write it as {parts.scheme}://HOST:PORT"
    if port == 0:
        return f"{variable} ({shown!r}) has port 0. Fix: use the port vLLM listens on (vllm_port)."
    path = "" if parts.path == "/" else parts.path  # a lone trailing '/' is normalised away
    if path or parts.query or parts.fragment:
        root = f"{parts.scheme}://{parts.netloc}"
        if re.search(r"/v1/?$", parts.path):
            symptom = ("Claude Code appends /v1/messages itself, so requests go to /v1/v1/messages "
                       "and get 404: the CLI reports \"There's an issue with the selected model\"")
        else:
            symptom = ("Claude Code appends /v1/messages to it, so requests go to a path vLLM does not "
                       "serve and get 404: the CLI reports \"There's an issue with the selected model\"")
        return f"{variable} ({shown!r}) must be the server root with no path. {symptom}. Fix: set it to {root}"
    return ""


def normalize_base_url(value):
    """Drop one trailing '/' (harmless, but keeps the written settings canonical)."""
    return value[:-1] if isinstance(value, str) and value.endswith("/") and not value.endswith("//") else value


# What a served id may contain: letters, digits and . _ - : + (real ids: Qwen3.5-27B, llama-3.1-8b-instruct,
# qwen2.5-coder:32b), starting with a letter or a digit (a leading '-' reads as an option to vLLM). The same
# id goes into vLLM's systemd unit, the gateway's haproxy.cfg and every settings.json, verbatim.
SERVED_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]*")
SERVED_NAME_MAX_LENGTH = 128


def _shorten(value, limit=60):
    """repr() of a value, cut to `limit` characters (a pasted blob is not printed whole)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}...' ({len(value)} characters)"


def served_model_name_problem(value, variable="served_model_name"):
    """The served id must be a flat, exact string both sides can agree on, and safe in every file it goes to."""
    if value is None or value == "":
        return (f"{variable} is empty. vLLM's --served-model-name and Claude Code's "
                f"ANTHROPIC_DEFAULT_*_MODEL must be the same non-empty id. Fix: set it, e.g. Qwen3.5-27B")
    if not isinstance(value, str):
        return (f"{variable} ({value!r}) is not a string (type {type(value).__name__}): the server, the gateway and "
                f"the settings files would each write it their own way and the ids would not match exactly "
                f"(\"There's an issue with the selected model\"). Fix: quote it, e.g. \"{value}\"")
    if re.search(r"\s", value):
        suggestion = re.sub(r"\s+", "-", value.strip())
        return (f"{variable} ({_shorten(value)}) contains whitespace; the ids then never match exactly and "
                f"Claude Code reports \"There's an issue with the selected model\". "
                f"Fix: remove the whitespace, e.g. {_shorten(suggestion)}")
    if "/" in value:
        return (f"{variable} ({_shorten(value)}) contains '/'. Served names with '/' do not work with Claude Code "
                f"(the notes' 'Qwen/... vs Qwen3.5-27B' mismatch: model not found, \"There's an issue with "
                f"the selected model\"). Fix: use a flat id such as {_shorten(value.rsplit('/', 1)[-1])}")
    if len(value) > SERVED_NAME_MAX_LENGTH:
        return (f"{variable} ({_shorten(value)}) is longer than {SERVED_NAME_MAX_LENGTH} characters, far beyond "
                f"any real served id (a paste error?): it must match byte for byte on the server, the gateway's "
                f"health check and every workstation. Fix: use the model's short id, e.g. Qwen3.5-27B")
    if not SERVED_NAME_PATTERN.fullmatch(value):
        bad = sorted({char for char in value if not re.fullmatch(r"[A-Za-z0-9._:+-]", char)})
        found = (", ".join(repr(char) for char in bad) if bad else f"a leading {value[0]!r}")
        suggestion = re.sub(r"[^A-Za-z0-9._:+-]", "", value).lstrip("._:+-") or "Qwen3.5-27B"
        return (f"{variable} ({_shorten(value)}) contains characters a served id cannot carry ({found}). It is "
                f"written verbatim into vLLM's systemd unit (where % and $ are expanded and a leading '-' "
                f"reads as an option), the gateway's haproxy.cfg (a '\"' ends the health check's string, so "
                f"'haproxy -c' refuses the config half-way through the run) and every user's settings.json: the "
                f"ids stop matching exactly (\"There's an issue with the selected model\") or the run breaks "
                f"mid-way. Allowed: letters, digits and . _ - : + (starting with a letter or digit), at most "
                f"{SERVED_NAME_MAX_LENGTH} characters. Fix: rename it, e.g. {_shorten(suggestion)}")
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


# Largest context length accepted: far above any model's window today; a larger number is a typo (1e12).
MAX_MODEL_LEN_LIMIT = 10_000_000


def _whole_number(value):
    """An int (not a bool) or a string of ASCII digits, as an int; None for anything else (1e12, 'big', 1.5)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"[0-9]+", value):
        return int(value)
    return None


def port_problem(value, variable="vllm_port"):
    """A TCP port: a whole number 1-65535 (an int or a string of digits; not a bool, not 8000.0)."""
    number = _whole_number(value)
    if number is not None and 1 <= number <= 65535:
        return ""
    return (f"{variable} ({_shorten(value)}) must be a TCP port, a whole number between 1 and 65535: nothing can "
            f"listen on it or connect to it (vLLM does not start, HAProxy refuses its configuration, and the base "
            f"URL built from it gives Claude Code \"API Error: Unable to connect to API\"). Fix: set the port "
            f"vLLM listens on, e.g. 8000.")


def max_model_len_problem(value, variable="vllm_max_model_len"):
    """The server's context length: a positive whole number of tokens, at most MAX_MODEL_LEN_LIMIT."""
    number = _whole_number(value)
    if number is None:
        return (f"{variable} ({_shorten(value)}) is not a whole number of tokens written as digits: vLLM would be "
                f"started with --max-model-len {_shorten(str(value))} and refuse it, and every workstation's "
                f"CLAUDE_CODE_MAX_OUTPUT_TOKENS and CLAUDE_CODE_MAX_CONTEXT_TOKENS are computed from it. "
                f"Fix: set the model's context length in tokens, e.g. 65536 (not 64k, 6.5e4 or true).")
    if not 1 <= number <= MAX_MODEL_LEN_LIMIT:
        return (f"{variable} ({number}) must be between 1 and {MAX_MODEL_LEN_LIMIT} tokens: vLLM refuses a "
                f"context longer than the model's own and Claude Code would be told its window is that large, so "
                f"it never compacts a conversation before the server refuses it (\"API Error: 400 ... maximum "
                f"context length\"). Fix: set the model's context length, e.g. 65536.")
    return ""


def claude_max_output_tokens(max_model_len, prompt_reserve=PROMPT_TOKEN_RESERVE, cap=CLAUDE_CODE_DEFAULT_MAX_OUTPUT_TOKENS):
    """Output budget so that Claude Code's prompt plus its output fit the context length.

    0 for a context length that is not a whole number: max_model_len_problem refuses it, and this value is
    only a role default that must not crash while the role's arguments are read.
    """
    length = _whole_number(max_model_len)
    if length is None:
        return 0
    return max(0, min(int(cap), length - int(prompt_reserve)))


def output_tokens_problem(max_model_len, prompt_reserve=PROMPT_TOKEN_RESERVE, variable="vllm_max_model_len"):
    if _whole_number(max_model_len) is None:
        return ""  # max_model_len_problem names it
    budget = claude_max_output_tokens(max_model_len, prompt_reserve)
    if budget >= MIN_USEFUL_OUTPUT_TOKENS:
        return ""
    needed = int(prompt_reserve) + MIN_USEFUL_OUTPUT_TOKENS
    return (f"{variable} ({max_model_len}) leaves only {budget} output tokens after Claude Code's "
            f"~{prompt_reserve}-token prompt; requests fail with \"API Error: 400 max_completion_tokens=... "
            f"cannot be greater than max_model_len\". Fix: start vLLM with at least {needed} "
            f"(--max-model-len), {int(prompt_reserve) + CLAUDE_CODE_DEFAULT_MAX_OUTPUT_TOKENS} for "
            f"Claude Code's full {CLAUDE_CODE_DEFAULT_MAX_OUTPUT_TOKENS}-token output budget.")


def max_output_tokens_problem(value, max_model_len, prompt_reserve=PROMPT_TOKEN_RESERVE,
                              variable="claude_code_max_output_tokens"):
    """An explicit output budget must be positive and fit next to the prompt in the context."""
    if _whole_number(max_model_len) is None:
        return ""  # max_model_len_problem names it; this default is derived from it
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
    if _whole_number(max_model_len) is None:
        return ""  # max_model_len_problem names it; this default is the same value
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




# ------------------------------------------------------------------------------------- the rules
RULES = []


def rule(*inputs):
    """Register a field-notes rule: it runs in every preflight that passes all of `inputs`."""
    def register(function):
        RULES.append((function, inputs))
        return function
    return register


rule("served_model_name")(served_model_name_problem)
rule("vllm_port")(port_problem)
rule("vllm_max_model_len")(max_model_len_problem)
rule("claude_code_model_alias")(model_alias_problem)
rule("llm_api_token")(token_problem)


@rule("served_model_tiers")
def served_model_tiers_rule(served_model_tiers):
    """Every bad entry of served_model_tiers, in one message (the rules return one message each)."""
    return " ".join(served_model_tiers_problems(served_model_tiers))


@rule("anthropic_base_url", "vllm_port")
def base_url_rule(anthropic_base_url, vllm_port):
    """The base URL, unless it names a port that port_problem already refuses (one message, not two)."""
    if port_problem(vllm_port) and f":{vllm_port}" in str(anthropic_base_url):
        return ""
    return base_url_problem(anthropic_base_url)


@rule("vllm_max_model_len", "claude_code_prompt_token_reserve")
def output_budget_rule(vllm_max_model_len, claude_code_prompt_token_reserve):
    return output_tokens_problem(vllm_max_model_len, claude_code_prompt_token_reserve)


@rule("claude_code_max_output_tokens", "vllm_max_model_len", "claude_code_prompt_token_reserve")
def max_output_tokens_rule(claude_code_max_output_tokens, vllm_max_model_len, claude_code_prompt_token_reserve):
    return max_output_tokens_problem(claude_code_max_output_tokens, vllm_max_model_len,
                                     claude_code_prompt_token_reserve)


@rule("claude_code_max_context_tokens", "vllm_max_model_len")
def context_tokens_rule(claude_code_max_context_tokens, vllm_max_model_len):
    return context_tokens_problem(claude_code_max_context_tokens, vllm_max_model_len)


@rule("vllm_enable_tool_calling", "workstation_count")
def tool_calling_rule(vllm_enable_tool_calling, workstation_count):
    """Claude Code always sends tools: a server without tool calling answers every request 400."""
    if vllm_enable_tool_calling or not int(workstation_count):
        return ""
    return ("vllm_enable_tool_calling is false while the workstations group has hosts: Claude Code always sends "
            "tools and vLLM answers every such request with 400 \"auto\" tool choice requires "
            "--enable-auto-tool-choice and --tool-call-parser to be set. Fix: keep vllm_enable_tool_calling: true.")


@rule("vllm_enable_tool_calling", "vllm_tool_call_parser")
def tool_call_parser_rule(vllm_enable_tool_calling, vllm_tool_call_parser):
    if not vllm_enable_tool_calling or vllm_tool_call_parser:
        return ""
    return ("vllm_tool_call_parser is empty. Fix: set the parser for your model (qwen3_coder for Qwen3.5/Qwen3-Coder, "
            "hermes for Qwen3).")


def fleet_rule_problems(inputs):
    """Every registered rule whose inputs are all in `inputs` (a dict), run; the messages of those that fail."""
    problems = []
    for function, names in RULES:
        if all(name in inputs for name in names):
            problem = function(*(inputs[name] for name in names))
            if problem:
                problems.append(problem)
    return problems


# Monitoring (role monitoring): the optional inventory group of the Prometheus hosts, the ports of the
# exporters it scrapes, and the scrape jobs' names (the alert rules and the dashboard select on them).
MONITORING_GROUP = "monitoring"
NODE_EXPORTER_PORT = 9100
GATEWAY_METRICS_PORT = 8405
SCRAPE_JOBS = {"vllm": "vllm", "gateway": "haproxy", "node": "node", "dcgm": "dcgm"}


# Multi-node instances (role vllm, plugins/filter/vllm_multinode.py): an instance's node_group names an
# inventory group with this prefix; playbooks/gpu_hosts.yml finds the groups it restarts as one batch by it.
VLLM_NODE_GROUP_PREFIX = "vllm_nodes_"


# What the lookup claude_vllm.fleet.fleet_contract answers: the contract's values, by name.
CONTRACT = {
    "gateway_backend": GATEWAY_BACKEND,
    "gateway_unkeyed_suffix": GATEWAY_UNKEYED_SUFFIX,
    "gateway_admin_socket": GATEWAY_ADMIN_SOCKET,
    "default_instance": DEFAULT_INSTANCE,
    "prompt_token_reserve": PROMPT_TOKEN_RESERVE,
    "claude_code_default_max_output_tokens": CLAUDE_CODE_DEFAULT_MAX_OUTPUT_TOKENS,
    "model_aliases": list(MODEL_ALIASES),
    "served_name_max_length": SERVED_NAME_MAX_LENGTH,
    "monitoring_group": MONITORING_GROUP,
    "node_exporter_port": NODE_EXPORTER_PORT,
    "gateway_metrics_port": GATEWAY_METRICS_PORT,
    "scrape_jobs": dict(SCRAPE_JOBS),
    "smoke_success_metric": SMOKE_SUCCESS_METRIC,
    "smoke_timestamp_metric": SMOKE_TIMESTAMP_METRIC,
    "node_exporter_textfile_dir": NODE_EXPORTER_TEXTFILE_DIR,
    "smoke_textfile_prefix": SMOKE_TEXTFILE_PREFIX,
    "workstation_expected_metric": WORKSTATION_EXPECTED_METRIC,
    "vllm_node_group_prefix": VLLM_NODE_GROUP_PREFIX,
}
