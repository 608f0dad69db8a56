# -*- coding: utf-8 -*-
"""Checks of the settings that must agree between vLLM and Claude Code (the field notes' table).

Each ``*_problem`` filter returns an empty string when the value is fine, or one message that
names the variable, what is wrong, the symptom a user would see, and the fix. Roles collect them
in a preflight task and fail before anything on the host changes.
"""

from __future__ import annotations

import difflib
import posixpath
import re

DOCUMENTATION = r"""
name: claude_vllm
short_description: Validation and derivation filters for the vLLM <-> Claude Code settings
description:
  - C(base_url_problem), C(served_model_name_problem), C(model_alias_problem), C(port_problem),
    C(max_model_len_problem), C(output_tokens_problem) return an empty string for a good value, else one
    error message naming the variable, the problem, the symptom and the fix; the C(*_problems) filters
    (users, env blocks, gateway values) return a list of such messages.
  - C(normalize_base_url) removes one trailing C(/).
  - C(claude_max_output_tokens) sizes CLAUDE_CODE_MAX_OUTPUT_TOKENS so prompt plus output fit
    the server's context length.
"""

from ansible_collections.claude_vllm.fleet.plugins.module_utils.fleet_contract import (  # noqa: F401 (filters)
    MODEL_ALIASES,
    _shorten,
    _unsafe_characters,
    _whole_number,
    base_url_problem,
    claude_max_output_tokens,
    context_tokens_problem,
    fleet_base_url,
    fleet_rule_problems,
    gateway_server_name,
    max_model_len_problem,
    max_output_tokens_problem,
    model_alias_problem,
    normalize_base_url,
    output_tokens_problem,
    port_problem,
    redact_url,
    served_model_name_problem,
    tier_model_env,
    fleet_tier_names,
    fleet_served_names,
    served_model_tiers_problems,
    token_problem,
)


USER_ITEM_KEYS = ("name", "env")
# Accounts that are never a person's, whatever claude_code_user_uid_min says: nobody (the kernel's overflow
# id, shared by every unmapped process) and the 32-bit "no id" values.
OVERFLOW_UIDS = (65534, 4294967294, 4294967295)
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def normalize_claude_code_users(users):
    """Accept names or {name, env} dicts; return a list of {name, env} dicts (bad items kept for the check).

    A dict item with keys other than name and env keeps them, sorted, under unknown_keys for the check.
    """
    if users is None:
        users = []
    elif not isinstance(users, (list, tuple)):
        users = [users]
    entries = []
    for item in users:
        if isinstance(item, dict):
            entry = {"name": item.get("name"), "env": item.get("env", {})}
            unknown = sorted((key for key in item if key not in USER_ITEM_KEYS), key=str)
            if unknown:
                entry["unknown_keys"] = unknown
            entries.append(entry)
        else:
            entries.append({"name": item, "env": {}})
    return entries


def _passwd_field(passwd, name, index):
    """Field `index` of getent's passwd entry [password, uid, gid, gecos, home, shell]; None when missing."""
    fields = (passwd or {}).get(name)
    if not isinstance(fields, (list, tuple)) or len(fields) <= index:
        return None
    return fields[index]


def _account_problem(name, passwd, uid_min, variable):
    """A listed user whose account is not a person's: a system uid, nobody, a home that is no home."""
    try:
        uid = int(_passwd_field(passwd, name, 1))
    except (TypeError, ValueError):
        uid = None
    home = _passwd_field(passwd, name, 4)
    if uid is not None and (uid in OVERFLOW_UIDS or (uid != 0 and uid < int(uid_min))):
        what = (f"the overflow account (uid {uid}, like nobody), shared by every process whose owner is unknown"
                if uid in OVERFLOW_UIDS else
                f"a system account (uid {uid}, below claude_code_user_uid_min {int(uid_min)})")
        lower = ("" if uid in OVERFLOW_UIDS else
                 f"; if your site's regular users start below {int(uid_min)}, lower claude_code_user_uid_min")
        return (f"{variable}: user {name!r} is {what}, not a person's login: the role would create "
                f"{home or '~' + name}/.claude/settings.json as that account, in a directory that belongs to the "
                f"system, and nobody runs Claude Code as it. Fix: list people's login accounts{lower}.")
    if isinstance(home, str) and (not home.startswith("/") or posixpath.normpath(home) in ("/", "//")):
        where = "'/'" if home.startswith("/") else f"{home!r}, not an absolute path"
        return (f"{variable}: user {name!r} has the home directory {where}: the role would write .claude/ "
                f"{'in the root directory' if home.startswith('/') else 'relative to wherever it runs'}, not in "
                f"a home of that user's own. Fix: give the account a real home (usermod -d /home/{name} -m "
                f"{name}) or remove it from {variable}.")
    return ""


def user_entry_problems(entries, passwd, must_exist=True, variable="claude_code_users", uid_min=1000):
    """Items of claude_code_users that name no usable account: one message per item, duplicates once.

    must_exist (user scope): every user must have an account here. Accounts that exist are checked in
    either scope: uid below uid_min (root, uid 0, is allowed: the bundled single-machine inventory manages
    whoever runs Ansible), nobody, a home that is '/' or relative, or a home shared with another listed user.
    """
    problems = []
    if must_exist and not entries:
        problems.append(f"{variable} is empty: there is nobody to configure. Fix: list at least one user.")
    names = [entry.get("name") for entry in entries]
    reported, homes = set(), {}
    for position, entry in enumerate(entries, 1):
        name = entry.get("name")
        unknown = entry.get("unknown_keys") or []
        if unknown:
            close = {key: difflib.get_close_matches(str(key), USER_ITEM_KEYS, n=1) for key in unknown}
            hints = "; ".join(f"{key!r} -> {match[0]!r}" for key, match in close.items() if match)
            problems.append(
                f"{variable}: item {position} ({repr(name) if name else 'no name'}) has the key(s) {', '.join(repr(k) for k in unknown)}, "
                f"which the role does not know (an item takes only 'name' and 'env'): they would be ignored "
                f"silently, so the user's env would not be written. Fix: "
                f"{('rename ' + hints) if hints else 'remove them'}, e.g. {{name: alice, env: {{HTTPS_PROXY: ...}}}}.")
        if not isinstance(name, str) or not name:
            if not unknown:
                problems.append(f"{variable}: item {position} has no user name. Fix: give a name, or "
                                f"{{name: NAME, env: {{...}}}}.")
            continue
        if name in reported:
            continue  # a later item of a user listed twice: reported with the first
        reported.add(name)
        if names.count(name) > 1:
            problems.append(
                f"{variable} lists user {name!r} {names.count(name)} times: the role would write the same "
                f"settings.json once per item on every run (with a different env each time), so every run is "
                f"'changed' and leaves a backup. Fix: list each user once, with all of its env in one "
                f"{{name: {name}, env: {{...}}}} item.")
        if not isinstance(entry.get("env"), dict):
            problems.append(f"{variable}: 'env' of user {name!r} must be a mapping of variable names to strings.")
        if name not in (passwd or {}):
            if must_exist:
                problems.append(f"{variable}: user {name!r} does not exist on this host. Fix: create the account "
                                f"first (ansible.builtin.user) or remove it from {variable}.")
            continue
        account = _account_problem(name, passwd, uid_min, variable)
        if account:
            problems.append(account)
            continue
        home = _passwd_field(passwd, name, 4)
        if isinstance(home, str):
            homes.setdefault(posixpath.normpath(home), []).append(name)
    for home, sharing in sorted(homes.items()):
        if len(sharing) > 1:
            listed = " and ".join(repr(name) for name in sharing)
            problems.append(
                f"{variable}: users {listed} share the home directory {home}: each would rewrite the same "
                f"{home}/.claude/settings.json with its own env and owner, so every run changes it again and the "
                f"file ends up owned by whichever came last. Fix: give each account a home of its own, or list "
                f"only one of them.")
    return problems


def _env_name_suggestion(key):
    name = re.sub(r"[^A-Za-z0-9_]+", "_", str(key).split("=", 1)[0].strip()).strip("_").upper()
    if not name:
        return "MY_VARIABLE"
    return f"_{name}" if name[0].isdigit() else name


def extra_env_problems(extra_env, managed_keys, conflicting_keys, variable="claude_code_extra_env"):
    """Keys of an extra env block that would fight the managed settings or break authentication.

    Keys must be environment variable names; values strings on one line. Values are never shown.
    """
    if not isinstance(extra_env, dict):
        return [f"{variable} must be a mapping of variable names to strings, not {type(extra_env).__name__}."]
    problems = []
    for key in sorted(extra_env, key=str):
        value = extra_env[key]
        if not isinstance(key, str) or not ENV_NAME.fullmatch(key):
            problems.append(
                f"{variable}: {_shorten(key)} is not an environment variable name (letters, digits and '_', not "
                f"starting with a digit): it would be written into settings.json, but no process can be given "
                f"an empty name or one with '=', and shells and tools cannot read one with spaces or a leading "
                f"digit, so the setting silently does nothing. Fix: rename it, e.g. {_env_name_suggestion(key)}.")
        elif key in (managed_keys or []):
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
        elif isinstance(value, (dict, list, tuple, set)):
            problems.append(
                f"{variable}.{key} is a {'mapping' if isinstance(value, dict) else 'list'}, not a string: "
                f"settings.json env values are strings, and Claude Code would get '[object Object]' for a mapping "
                f"or the items joined with commas for a list. Fix: write the value as one string.")
        elif not isinstance(value, str):
            problems.append(f"{variable}.{key} must be a string (settings.json env values are strings), not "
                            f"a {type(value).__name__}. Fix: quote it.")
        elif re.search(r"[\x00-\x08\x0a-\x1f\x7f]", value):
            problems.append(
                f"{variable}.{key} contains a NUL, a newline or another control character (the value is not "
                f"shown): no environment variable can hold a NUL (Node.js refuses to start a command with one: "
                f"'must be a string without null bytes'), and a newline splits the value for the shells and "
                f"tools that read it. Fix: write it on one line, without control characters.")
    return problems


def users_env_problems(entries, managed_keys, conflicting_keys, variable="claude_code_users"):
    """extra_env_problems for each user's own env, naming the user: claude_code_users[alice].env ..."""
    problems = []
    for entry in entries or []:
        name, env = entry.get("name"), entry.get("env")
        if isinstance(name, str) and name and isinstance(env, dict):
            problems.extend(extra_env_problems(env, managed_keys, conflicting_keys, f"{variable}[{name}].env"))
    return problems


_NOT_SET = "(not set)"


def fleet_disagreements(hostvars, hosts, variable, local_value, this_host=None, unset=_NOT_SET):
    """One message naming the hosts of the other side (gpu_hosts or workstations) that disagree with this one.

    Reads each host's own variables through hostvars, so a group_vars or host_vars override on one side
    only is caught before anything changes; "" when every host agrees. this_host (inventory_hostname) is
    skipped: a host in both groups is not compared with itself (its play may set the variable). unset: the
    value an optional variable has where it is not set or empty (served_model_tiers: {}); by default an unset
    variable is a disagreement.
    """
    differing = {}
    for host in hosts or []:
        if host == this_host:
            continue
        try:
            values = hostvars[host]
            value = values.get(variable, _NOT_SET) if hasattr(values, "get") else _NOT_SET
        except KeyError:
            continue
        if unset != _NOT_SET and value in (_NOT_SET, None, ""):
            value = unset
        if value != local_value and str(value) != str(local_value):
            differing[host] = value
    if not differing:
        return ""
    listed = ", ".join(f"{host} has {value!r}" for host, value in sorted(differing.items()))
    return (f"{variable} is {local_value!r} here but {listed}: the server side and the client side must agree "
            f"exactly (a name changed on one side only makes the CLI say the model may not exist). Fix: set "
            f"{variable} once for the whole fleet (group_vars/all), not per host or group.")

# HAProxy configuration words the gateway role templates into haproxy.cfg unquoted: a space, '#', a quote or
# a backslash there changes the line's meaning, and 'haproxy -c' (the template's validate) then refuses the
# file after HAProxy, its environment file and its systemd drop-in are already installed.
HAPROXY_TIME = re.compile(r"[0-9]+(us|ms|s|m|h|d)?")
HAPROXY_NAME = re.compile(r"[A-Za-z0-9_.:-]+")  # HAProxy's own rule for server names
HAPROXY_ADDRESS = re.compile(r"[A-Za-z0-9_.:%*\[\]-]+")
HAPROXY_PATH = re.compile(r"/[A-Za-z0-9_.@+/-]*")
_HAPROXY_BREAKS = ("'haproxy -c' refuses the configuration half-way through the run, after HAProxy, its "
                   "environment file and its systemd drop-in are installed")


def haproxy_time_problem(value, variable):
    if isinstance(value, bool) or not HAPROXY_TIME.fullmatch(str(value)):
        return (f"{variable} ({_shorten(value)}) is not an HAProxy time (a whole number with an optional unit us, "
                f"ms, s, m, h or d): {_HAPROXY_BREAKS}. Fix: write it like 5s or 50m.")
    return ""


def whole_number_problem(value, variable, minimum=0, example=None):
    """A count or size setting: a whole number (int or digits) of at least `minimum`."""
    number = _whole_number(value)
    if number is None or number < int(minimum):
        return (f"{variable} ({_shorten(value)}) must be a whole number of at least {int(minimum)}; the run would "
                f"stop half-way, at the first task that uses it. Fix: set e.g. "
                f"{example if example is not None else int(minimum)}.")
    return ""


def haproxy_count_problem(value, variable, minimum=0):
    number = _whole_number(value)
    if number is None or number < int(minimum):
        return (f"{variable} ({_shorten(value)}) must be a whole number of at least {int(minimum)}: "
                f"{_HAPROXY_BREAKS}. Fix: set e.g. {max(int(minimum), 2)}.")
    return ""


def haproxy_word_problem(value, variable, kind="address", example="127.0.0.1:8404"):
    """kind address: an address or address:port (no space, quote, '#'); kind path: an absolute path."""
    pattern = HAPROXY_PATH if kind == "path" else HAPROXY_ADDRESS
    if isinstance(value, str) and pattern.fullmatch(value):
        return ""
    allowed = ("an absolute path of letters, digits and _ . @ + / -" if kind == "path" else
               "an address or address:port of letters, digits and _ . : % * [ ] -")
    return (f"{variable} ({_shorten(value)}) must be {allowed}, with no space, quote, '#' or control character "
            f"(it is written unquoted into haproxy.cfg): {_HAPROXY_BREAKS}. Fix: set it like {example}.")


def gateway_server_problems(servers, default_port=None):
    """The HAProxy server lines the gateway writes: name (HOST-INSTANCE), address (ansible_host) and port.

    A server on a bad default_port (vllm_port) is not reported again: port_problem names vllm_port once.
    """
    problems = []
    skip_port = str(default_port) if default_port is not None and port_problem(default_port) else None
    for server in servers or []:
        name, host = server.get("name"), server.get("host")
        if not isinstance(name, str) or not HAPROXY_NAME.fullmatch(name):
            problems.append(
                f"gateway server {_shorten(name)} (host {_shorten(host)} and its vllm_instances name) has "
                f"characters HAProxy refuses in a server name (only letters, digits and _ . : -): "
                f"{_HAPROXY_BREAKS}. Fix: rename the inventory host or the instance.")
        address = server.get("address")
        if not isinstance(address, str) or not HAPROXY_ADDRESS.fullmatch(address):
            problems.append(
                f"ansible_host of {_shorten(host)} ({_shorten(address)}) is not an address the gateway can "
                f"write into haproxy.cfg (no space, quote or '#'): {_HAPROXY_BREAKS}. Fix: set it to the "
                f"server's DNS name or IP address.")
        port = port_problem(server.get("port"), f"the port of gateway server {name} (vllm_port or the "
                                                f"vllm_instances port of {host})")
        if port and str(server.get("port")) != skip_port:
            problems.append(port)
    return problems


class FilterModule:
    def filters(self):
        return {
            "base_url_problem": base_url_problem,
            "normalize_base_url": normalize_base_url,
            "served_model_name_problem": served_model_name_problem,
            "port_problem": port_problem,
            "max_model_len_problem": max_model_len_problem,
            "redact_url": redact_url,
            "model_alias_problem": model_alias_problem,
            "claude_max_output_tokens": claude_max_output_tokens,
            "output_tokens_problem": output_tokens_problem,
            "max_output_tokens_problem": max_output_tokens_problem,
            "token_problem": token_problem,
            "context_tokens_problem": context_tokens_problem,
            "normalize_claude_code_users": normalize_claude_code_users,
            "user_entry_problems": user_entry_problems,
            "extra_env_problems": extra_env_problems,
            "users_env_problems": users_env_problems,
            "fleet_disagreements": fleet_disagreements,
            "haproxy_time_problem": haproxy_time_problem,
            "haproxy_count_problem": haproxy_count_problem,
            "whole_number_problem": whole_number_problem,
            "haproxy_word_problem": haproxy_word_problem,
            "gateway_server_problems": gateway_server_problems,
            "gateway_allowed_requests_problems": gateway_allowed_requests_problems,
            "gateway_stats_problems": gateway_stats_problems,
            "tls_names_problem": tls_names_problem,
            "fleet_rule_problems": fleet_rule_problems,
            "fleet_base_url": fleet_base_url,
            "tier_model_env": tier_model_env,
            "fleet_tier_names": fleet_tier_names,
            "fleet_served_names": fleet_served_names,
            "served_model_tiers_problems": served_model_tiers_problems,
            "gateway_server_name": gateway_server_name,
        }


# What the gateway forwards (gateway_allowed_requests): each item becomes an exact `path -m str` and a
# `method` ACL in haproxy.cfg, and is quoted inside the JSON answers HAProxy gives for everything else.
HTTP_METHOD = re.compile(r"[A-Z]+")
GATEWAY_PATH = re.compile(r"/[A-Za-z0-9._~/-]*")


def gateway_allowed_requests_problems(value, variable="gateway_allowed_requests"):
    """A non-empty list of {method, path}: methods in capitals, paths absolute, exact, without query."""
    example = "{method: POST, path: /v1/messages}"
    if not isinstance(value, (list, tuple)) or not value:
        return [f"{variable} ({_shorten(value)}) must be a non-empty list of items like {example}: the gateway "
                f"forwards only these requests and answers every other one itself, so an empty list refuses "
                f"every request of Claude Code. Fix: keep the role's default (POST /v1/messages, POST "
                f"/v1/messages/count_tokens, GET /v1/models, GET /health) and add to it."]
    problems = []
    for position, item in enumerate(value, 1):
        if not isinstance(item, dict) or set(item) != {"method", "path"}:
            problems.append(f"{variable}: item {position} ({_shorten(item)}) must be a mapping with exactly the keys "
                            f"method and path, e.g. {example}.")
            continue
        method, path = item["method"], item["path"]
        if not isinstance(method, str) or not HTTP_METHOD.fullmatch(method):
            upper = method.upper() if isinstance(method, str) and HTTP_METHOD.fullmatch(method.upper()) else "POST"
            problems.append(f"{variable}: item {position} has method {_shorten(method)}, not an HTTP method in "
                            f"capitals: HAProxy compares methods exactly (GET is not get), so the request would be "
                            f"answered 405. Fix: write {upper}.")
        if not isinstance(path, str) or not GATEWAY_PATH.fullmatch(path) or "//" in path \
                or any(segment in (".", "..") for segment in path.split("/")):
            query = isinstance(path, str) and "?" in path
            problems.append(
                f"{variable}: item {position} has path {_shorten(path)}, which must be an absolute path of letters, "
                f"digits and - . _ ~ / (no '//', '.' or '..' segment, no space, quote, '%' or '#'): it is compared "
                f"exactly with the request's path and written into haproxy.cfg, where such a character breaks the "
                f"line ({_HAPROXY_BREAKS}). "
                + ("The query string is not part of the path: any query is accepted. " if query else "")
                + f"Fix: write it like /v1/messages.")
    return problems


def _loopback_listen(listen):
    """True for an HAProxy bind address on loopback only: 127.x.y.z:port, [::1]:port, ::1:port, localhost:port."""
    import ipaddress

    host = listen
    for prefix in ("ipv4@", "ipv6@"):
        if host.startswith(prefix):
            host = host[len(prefix):]
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    elif ":" in host:
        host = host.rsplit(":", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


STATS_USER = re.compile(r"[A-Za-z0-9._-]{1,64}")
STATS_PASSWORD = re.compile(r"[A-Za-z0-9._~+/=:@!,^*-]{12,256}")


def gateway_stats_problems(listen, user="", password="", variable="gateway_stats_listen"):
    """HAProxy's statistics page: on loopback, or behind basic authentication with usable credentials.

    The credentials go into the root-only environment file (FLEET_GATEWAY_STATS_AUTH=user:password), read by
    systemd, and from there into `stats auth`; the password is never shown.
    """
    if not listen:
        return []
    problems = []
    user, password = user or "", password or ""
    if bool(user) != bool(password):
        problems.append("gateway_stats_user is set but gateway_stats_password is empty (or the other way round). "
                        "Fix: set both (the password from ansible-vault), or neither for a loopback-only page.")
    if not user and not password and isinstance(listen, str) and not _loopback_listen(listen):
        problems.append(
            f"{variable} ({_shorten(listen)}) is not a loopback address and gateway_stats_user and "
            f"gateway_stats_password are empty: HAProxy's statistics page (every server's name, address, state and "
            f"traffic) would be open to anyone who reaches that port. Fix: bind it to 127.0.0.1:8404 (reach it "
            f"through ssh -L 8404:127.0.0.1:8404), or set both credentials (the password from ansible-vault).")
    if user and (not isinstance(user, str) or not STATS_USER.fullmatch(user)):
        problems.append(f"gateway_stats_user ({_shorten(user)}) must be 1-64 letters, digits and - . _ (no ':', "
                        f"which separates it from the password in HAProxy's 'stats auth'). Fix: e.g. fleet-ops.")
    if password and (not isinstance(password, str) or not STATS_PASSWORD.fullmatch(password)):
        problems.append("gateway_stats_password (not shown) must be 12-256 letters, digits and - . _ ~ + / = : @ ! , "
                        "^ * (it is written into a systemd environment file, which mangles quotes, backslashes and "
                        "spaces, and HAProxy would then refuse every login). Fix: generate one, e.g. "
                        "openssl rand -base64 24, and keep it in ansible-vault.")
    return problems


TLS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def tls_names_problem(value, variable, example="ECDHE-RSA-AES128-GCM-SHA256"):
    """A non-empty list of OpenSSL cipher (or TLS 1.3 suite) names, joined with ':' into haproxy.cfg."""
    if isinstance(value, (list, tuple)) and value and all(
            isinstance(name, str) and TLS_NAME.fullmatch(name) for name in value):
        return ""
    return (f"{variable} ({_shorten(value)}) must be a non-empty list of OpenSSL names of letters, digits, - and _ "
            f"(one name per item; they are joined with ':' into haproxy.cfg): {_HAPROXY_BREAKS}. Fix: keep the "
            f"role's default, or list names like {example}.")
