"""The gateway's haproxy.cfg as Ansible renders it, checked and run by the real HAProxy (Debian's package).

One ansible-playbook run renders roles/gateway/templates/haproxy.cfg.j2 and fleet-gateway.env.j2 for several
stand-in gateway hosts, each with its own variables, after the role's own validate.yml (the role's defaults
and vars, the project's filters, the template module): exactly what the role writes. A host that validate.yml
refuses is reported with its messages instead. Then:

- `haproxy -c` accepts each rendered configuration (TLS on and off, statistics page, a custom allowed list),
  which carries the hardening (chroot, TLS profile, maxconn, body limit and timeout);
- validate.yml refuses an open statistics page, a bad allowed list, bad credentials or cipher names;
- a real HAProxy runs the rendered configuration on 127.0.0.1 in front of a tiny Python backend on another
  loopback port: Claude Code's requests reach the backend, everything else is answered by HAProxy and never
  reaches it, an over-size Content-Length gets 413, a chunked body 411, a stalled body 408; the runtime socket
  and logging work inside the chroot; with TLS, TLS 1.1 and a TLS 1.2 cipher without forward secrecy are
  refused, TLS 1.2 with ECDHE works, without a session ticket.

What the live run changes in the rendered text, and only that: the certificate's path (a throwaway self-signed
one made here with openssl) and, as root, the chroot directory (a fresh empty one holding only dev/log, as
Debian's unit bind-mounts /dev/log into /var/lib/haproxy); not as root, the chroot/user/group lines go (they
need root). GATEWAY_TEMPLATE=PATH renders another template instead (e.g. an older one, to see what it fails).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from ansible_collections.claude_vllm.fleet.plugins.module_utils import fleet_contract as contract
from conftest import ANSIBLE_PLAYBOOK, REPO, playbook_env, run_module

HAPROXY = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if os.access(p, os.X_OK)), None)
OPENSSL = shutil.which("openssl")
TEMPLATE = Path(os.environ.get("GATEWAY_TEMPLATE") or REPO / "roles/gateway/templates/haproxy.cfg.j2")
ROLE_CERTIFICATE = "/etc/haproxy/certs/fleet-gateway.pem"  # __gateway_certificate_file
ROLE_CHROOT = "/var/lib/haproxy"  # __gateway_chroot (vars/Debian.yml)
ROLE_TOKEN_MAP = "/etc/haproxy/fleet-users.map"  # __gateway_token_map
USER_TOKEN_SECRET = "per-user-token-secret-of-this-test-0123456789"
SERVED = "Qwen3.5-27B"  # inventory/default/group_vars/all.yml
DEFAULT_MAX_BODY = 32 * 1024 * 1024
TRIO = ("trio-a", "trio-b", "trio-c")  # the stand-in servers behind the affinity and leastconn gateways
# Tiers on different models (served_model_tiers): haiku on a small model with a '+' in its name (HAProxy
# allows none in a backend name: the contract's backend name replaces it), served by its own stand-in.
SMALL = "Qwen3-4B+fast"
TIERS = {"haiku": SMALL}
TIER_HOSTS = {"tier-big": SERVED, "tier-small": SMALL}
AS_ROOT = os.geteuid() == 0

pytestmark = [
    pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible-playbook not in this venv"),
    pytest.mark.skipif(HAPROXY is None or OPENSSL is None,
                       reason="haproxy or openssl missing (python3 tools/fleet.py setup --for-tests installs them)"),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---------------------------------------------------------------------------------------------- rendering
STATS_PASSWORD = "stats-Pass-0123456789"

CHECK_CASES = {
    "defaults": {},
    "tls": {"tls": True},
    "stats_loopback": {"gateway_stats_listen": "127.0.0.1:8404"},
    "stats_auth_tls": {"tls": True, "gateway_stats_listen": "*:8404", "gateway_stats_user": "fleet-ops",
                       "gateway_stats_password": STATS_PASSWORD},
    # Per-user tokens: alice and bob are listed on the workstation, bob is revoked.
    "per_user": {"llm_user_token_secret": USER_TOKEN_SECRET, "llm_revoked_users": ["bob"]},
    "leastconn": {"gateway_balance": "leastconn"},
    "affinity_unbounded": {"gateway_affinity_balance_factor": 0, "gateway_affinity_header": "X-Conversation"},
    # Tiers that all name served_model_name: one served name, so nothing changes (compared with defaults).
    "tiers_one_name": {"served_model_tiers": {"opus": SERVED, "haiku": SERVED}},
    "custom": {"tls": True, "gateway_tls_min_version": "TLSv1.3", "gateway_require_content_length": False,
               "gateway_maxconn": 500, "gateway_max_request_body": 1048576,
               "gateway_allowed_requests": [{"method": "POST", "path": "/v1/messages"},
                                            {"method": "GET", "path": "/v1/models"},
                                            {"method": "HEAD", "path": "/v1/models"},
                                            {"method": "POST", "path": "/tokenize"}]},
}
REFUSED_CASES = {
    "stats_open": ({"gateway_stats_listen": "0.0.0.0:8404"},
                   ["gateway_stats_listen ('0.0.0.0:8404') is not a loopback address"]),
    "stats_half": ({"gateway_stats_listen": "10.0.0.5:8404", "gateway_stats_user": "ops"},
                   ["gateway_stats_user is set but gateway_stats_password is empty"]),
    "stats_password": ({"gateway_stats_listen": "[::1]:8404", "gateway_stats_user": "ops",
                        "gateway_stats_password": "short pass\""},
                       ["gateway_stats_password (not shown) must be 12-256"]),
    "requests": ({"gateway_allowed_requests": [{"method": "get", "path": "/v1/models"},
                                               {"method": "POST", "path": "/v1/messages?beta=true"},
                                               {"method": "POST", "path": "/v1/x' y"},
                                               {"path": "/health"}]},
                 ["item 1 has method 'get', not an HTTP method in capitals", "Fix: write GET",
                  "item 2 has path '/v1/messages?beta=true'", "The query string is not part of the path",
                  "item 3 has path", "item 4 ({'path': '/health'}) must be a mapping with exactly the keys"]),
    "balance": ({"gateway_balance": "sticky"}, ["gateway_balance ('sticky') must be affinity or leastconn"]),
    "affinity": ({"gateway_affinity_header": "X-Session Id'", "gateway_affinity_balance_factor": 100},
                 ["gateway_affinity_header (\"X-Session Id'\") must be an HTTP header name",
                  "gateway_affinity_balance_factor (100) must be 0 (no bound) or a whole number above 100"]),
    "per_user_short": ({"llm_user_token_secret": "too-short"},
                       ["llm_user_token_secret is 9 characters long (the value is not shown)"]),
    "per_user_nobody": ({"llm_user_token_secret": USER_TOKEN_SECRET, "llm_revoked_users": ["alice", "bob"]},
                        ["no host of workstations (gateway_workstation_group) lists claude_code_users"]),
    "requests_empty": ({"gateway_allowed_requests": []}, ["gateway_allowed_requests ([]) must be a non-empty list"]),
    "metrics_port": ({"gateway_metrics_sources": ["10.9.0.0/16", "not a host!"], "gateway_metrics_port": 8000},
                     ["gateway_metrics_port and gateway_port are both 8000", "gateway_metrics_sources"]),
    "ciphers": ({"gateway_tls_ciphers": ["ECDHE-RSA-AES128-GCM-SHA256 AES128-SHA"], "gateway_maxconn": 0},
                ["gateway_tls_ciphers (", "gateway_maxconn (0) must be a whole number of at least 1"]),
    # Tiers: a tier's name that no server of the group serves; a server whose name no tier asks for; two names
    # that share a backend name ('+' and '_'), also unserved; a bad tier alias.
    "tier_unserved": ({"served_model_tiers": {"haiku": "Nobody-1B"}},
                      ["the tier haiku (served_model_tiers) asks for 'Nobody-1B', but no vLLM instance of backends",
                       "Fix: add an instance with served_model_name: Nobody-1B"]),
    "tier_unasked": ({"gateway_backend_group": "tiered"},
                     [f"gateway server tier-small-main (host tier-small, vllm_instances main) serves '{SMALL}', "
                      f"which none of the fleet's tiers asks for", f"(e.g. haiku: {SMALL})"]),
    "tier_collision": ({"gateway_backend_group": "tiered", "served_model_tiers": {"haiku": SMALL,
                                                                                  "opus": "Qwen3-4B_fast"}},
                       [f"the served names 'Qwen3-4B_fast' and '{SMALL}' would share the gateway's backend "
                        f"vllm_Qwen3-4B_fast", "the tier opus (served_model_tiers) asks for 'Qwen3-4B_fast'"]),
    "tier_alias": ({"served_model_tiers": {"fast": SMALL}}, ["served_model_tiers has the key 'fast'"]),
}
# Rendered with the group of two stand-ins that serve one name each, and checked by haproxy -c.
TIER_CASES = {
    "tiers": {"served_model_tiers": TIERS},
    "tiers_leastconn": {"served_model_tiers": TIERS, "gateway_balance": "leastconn"},
    "tiers_per_user": {"served_model_tiers": {"haiku": SMALL, "opus": SMALL}, "llm_user_token_secret": USER_TOKEN_SECRET},
}


@pytest.fixture(scope="module")
def material(tmp_path_factory):
    """A throwaway self-signed RSA certificate for 127.0.0.1 (RSA, so that RSA key exchange could be offered)."""
    directory = tmp_path_factory.mktemp("tls")
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(directory / "key.pem"), "-out", str(directory / "cert.pem")],
                   check=True, capture_output=True, timeout=60)
    certificate, key = (directory / "cert.pem").read_text(), (directory / "key.pem").read_text()
    bundle = directory / "fleet-gateway.pem"  # what the role writes: certificate then key, root only
    bundle.write_text(certificate.strip() + "\n" + key.strip() + "\n")
    bundle.chmod(0o600)
    return {"certificate": certificate, "key": key, "bundle": str(bundle)}


@pytest.fixture(scope="module")
def ports():
    return {"backend": free_port(), "live": free_port(), "live_tls": free_port(), "live_affinity": free_port(),
            "live_leastconn": free_port(), "trio": [free_port() for _ in TRIO], "metrics": free_port(),
            "metrics_claude": free_port(), "live_tiers": free_port(),
            "tiers": {host: free_port() for host in TIER_HOSTS}}


def host_variables(case: dict, material: dict) -> dict:
    variables = {key: value for key, value in case.items() if key != "tls"}
    if case.get("tls"):
        variables.update(gateway_tls_certificate=material["certificate"], gateway_tls_private_key=material["key"])
    return variables


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, material, ports):
    """{case: {"cfg": text, "env": {name: value}} or {"refused": [messages]}}, from one ansible-playbook run."""
    work = tmp_path_factory.mktemp("render")
    live = {"gateway_bind_address": "127.0.0.1", "gateway_timeout_http_request": "2s"}
    cases = {name: host_variables(case, material) for name, case in CHECK_CASES.items()}
    cases.update({name: case for name, (case, _) in REFUSED_CASES.items()})
    cases.update({name: dict(case, gateway_backend_group="tiered") for name, case in TIER_CASES.items()})
    cases["live"] = dict(live, gateway_port=ports["live"], gateway_admin_socket=str(work / "live.sock"))
    # Three stand-in servers (group trio) behind two more gateways: the affinity default and leastconn.
    for name, balance in (("live_affinity", "affinity"), ("live_leastconn", "leastconn")):
        cases[name] = dict(live, gateway_port=ports[name], gateway_admin_socket=str(work / f"{name}.sock"),
                           gateway_backend_group="trio", gateway_balance=balance,
                           gateway_health_check_interval="200ms")
    # The exporter's listener on every address, for the monitoring network 10.9.0.0/16 only (and loopback).
    cases["metrics"] = dict(live, gateway_bind_address="*", gateway_port=ports["metrics_claude"],
                            gateway_metrics_port=ports["metrics"], gateway_metrics_sources=["10.9.0.0/16"],
                            gateway_admin_socket=str(work / "metrics.sock"))
    # Two stand-ins (group tiered), one per served name, behind a gateway with tiers (affinity, the default).
    cases["live_tiers"] = dict(live, gateway_port=ports["live_tiers"], gateway_admin_socket=str(work / "live_tiers.sock"),
                               gateway_backend_group="tiered", served_model_tiers=TIERS,
                               gateway_health_check_interval="200ms")
    cases["live_tls"] = dict(host_variables({"tls": True}, material), gateway_port=ports["live_tls"],
                             gateway_admin_socket=str(work / "live_tls.sock"), **live)
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory = {"all": {"children": {
        "gateways": {"hosts": {name: dict(local, **variables) for name, variables in cases.items()},
                     "vars": {"gateway_backend_group": "backends"}},
        "backends": {"hosts": {"backend-a": {"ansible_host": "127.0.0.1", "vllm_port": ports["backend"]}}},
        "trio": {"hosts": {name: {"ansible_host": "127.0.0.1", "vllm_port": port}
                           for name, port in zip(TRIO, ports["trio"])}},
        "tiered": {"hosts": {host: dict({"ansible_host": "127.0.0.1", "vllm_port": ports["tiers"][host]},
                                        **({} if model == SERVED else
                                           {"vllm_instances": [{"name": "main", "served_model_name": model}]}))
                             for host, model in TIER_HOSTS.items()}},
        "workstations": {"hosts": {"ws-a": {"claude_code_users": ["alice", {"name": "bob"}]}}},
    }}}
    (work / "inventory/group_vars").mkdir(parents=True)
    (work / "inventory/hosts.yml").write_text(yaml.safe_dump(inventory))
    shutil.copy(REPO / "inventory/default/group_vars/all.yml", work / "inventory/group_vars/all.yml")
    out = work / "out"
    out.mkdir()
    play = [{"name": "Render the gateway's templates", "hosts": "gateways", "gather_facts": False, "tasks": [
        {"name": "Load the role's Debian variables (as its main.yml does)",
         "ansible.builtin.include_vars": str(REPO / "roles/gateway/vars/Debian.yml")},
        {"name": "Run the role's validate.yml (its defaults and vars stay for the templates)",
         "ansible.builtin.include_role": {"name": "claude_vllm.fleet.gateway", "tasks_from": "validate.yml", "public": True}},
        {"name": "Render haproxy.cfg", "ansible.builtin.template": {
            "src": str(TEMPLATE), "dest": f"{out}/{{{{ inventory_hostname }}}}.cfg", "mode": "0600"}},
        {"name": "Render the token map", "ansible.builtin.template": {
            "src": str(REPO / "roles/gateway/templates/fleet-users.map.j2"),
            "dest": f"{out}/{{{{ inventory_hostname }}}}.map", "mode": "0600"}},
        {"name": "Render the environment file", "ansible.builtin.template": {
            "src": str(REPO / "roles/gateway/templates/fleet-gateway.env.j2"),
            "dest": f"{out}/{{{{ inventory_hostname }}}}.env", "mode": "0600"}},
    ]}]
    (work / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    env = playbook_env(ANSIBLE_FORKS="8")
    result = subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", str(work / "inventory/hosts.yml"), str(work / "play.yml")],
                            cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert result.stdout.strip(), result.stderr[-3000:]
    report = json.loads(result.stdout)
    results = {}
    for task in report["plays"][0]["tasks"]:
        for host, outcome in task["hosts"].items():
            if outcome.get("failed"):
                results[host] = {"refused": outcome.get("msg", [])[1:] if isinstance(outcome.get("msg"), list)
                                 else [str(outcome.get("msg"))], "task": task["task"]["name"]}
    for name in cases:
        if name not in results:
            env_file = (out / f"{name}.env").read_text()
            results[name] = {"cfg": (out / f"{name}.cfg").read_text(), "map": (out / f"{name}.map").read_text(),
                             "env": dict(line.split("=", 1) for line in env_file.splitlines()
                                         if line and not line.startswith("#"))}
    for secret in (STATS_PASSWORD, "BEGIN PRIVATE KEY"):
        assert secret not in result.stdout + result.stderr  # the play's own output (template diffs are off)
    return results


def config_for(rendered: dict, name: str, material: dict, chroot: str | None = None) -> str:
    """The rendered text with the certificate's path (and the chroot) moved to this test's own files."""
    assert "cfg" in rendered[name], (name, rendered[name])
    text = rendered[name]["cfg"]
    if "ssl crt " in text:
        assert ROLE_CERTIFICATE in text
        text = text.replace(ROLE_CERTIFICATE, material["bundle"])
    if ROLE_TOKEN_MAP in text:
        token_map = Path(material["bundle"]).parent / f"{name}.map"
        token_map.write_text(rendered[name]["map"])
        text = text.replace(ROLE_TOKEN_MAP, str(token_map))
    if chroot is not None:  # (the hardening test and the chroot test check that the line is there)
        text = text.replace(f"    chroot {ROLE_CHROOT}\n", f"    chroot {chroot}\n")
    return text


def sections(text: str) -> dict[str, list[str]]:
    """haproxy.cfg's sections ('global', 'frontend claude_code', ...) and their lines, comments left out."""
    found, current = {}, None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith((" ", "\t")):
            current = line.strip()
            found[current] = []
        elif current:
            found[current].append(line.strip())
    return found


def haproxy_check(path: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([HAPROXY, "-c", "-f", str(path)], env=dict(os.environ, **env), capture_output=True,
                          text=True, timeout=60)


# ------------------------------------------------------------------------------- haproxy -c and contents
def assert_haproxy_accepts(rendered, name, material, tmp_path):
    """`haproxy -c` accepts case `name`'s rendered config with no alert and no warning."""
    config = tmp_path / "haproxy.cfg"
    config.write_text(config_for(rendered, name, material))
    check = haproxy_check(config, rendered[name]["env"])
    assert check.returncode == 0 and "[ALERT]" not in check.stdout + check.stderr, check.stdout + check.stderr
    assert "[WARNING]" not in check.stdout + check.stderr, check.stdout + check.stderr


@pytest.mark.parametrize("name", list(CHECK_CASES))
def test_haproxy_accepts_the_rendered_config_and_it_is_hardened(name, rendered, material, tmp_path):
    assert_haproxy_accepts(rendered, name, material, tmp_path)

    case = CHECK_CASES[name]
    parts = sections(rendered[name]["cfg"])
    maxconn = case.get("gateway_maxconn", 2000)
    glob = parts["global"]
    assert f"chroot {ROLE_CHROOT}" in glob and "user haproxy" in glob and "group haproxy" in glob
    assert f"maxconn {maxconn + 100}" in glob
    assert f"ssl-default-bind-options ssl-min-ver {case.get('gateway_tls_min_version', 'TLSv1.2')} no-tls-tickets" \
        in glob
    ciphers = next(line.split()[1] for line in glob if line.startswith("ssl-default-bind-ciphers "))
    assert ciphers.split(":") and all(c.startswith("ECDHE-") and ("GCM" in c or "CHACHA20" in c)
                                      for c in ciphers.split(":"))
    front = parts["frontend claude_code"]
    assert f"maxconn {maxconn}" in front
    assert f"http-request wait-for-body time {'60s'}" in front
    body = case.get("gateway_max_request_body", DEFAULT_MAX_BODY)
    assert any(line.startswith("http-request return status 413 ") and line.endswith(
        f"if {{ req.hdr_val(content-length) gt {body} }}") for line in front)
    assert any(line.startswith("http-request return status 411 ") for line in front) \
        == case.get("gateway_require_content_length", True)
    # the forwarded paths, and nothing else, with their methods
    requests = case.get("gateway_allowed_requests") or [
        {"method": "POST", "path": "/v1/messages"}, {"method": "POST", "path": "/v1/messages/count_tokens"},
        {"method": "GET", "path": "/v1/models"}, {"method": "GET", "path": "/health"}]
    paths = list(dict.fromkeys(item["path"] for item in requests))
    assert any(line.startswith("http-request return status 404 ") and line.endswith(
        "unless { path -m str " + " ".join(paths) + " }") for line in front)
    for path in paths:
        methods = " ".join(dict.fromkeys(item["method"] for item in requests if item["path"] == path))
        assert any(line.startswith("http-request return status 405 ") and line.endswith(
            f"if {{ path -m str {path} }} !{{ method {methods} }}") for line in front), (path, methods)
    rules = [line for line in front if line.startswith("http-request ")]
    assert rules[-1].startswith("http-request wait-for-body")  # refusals first, from the headers alone
    # how requests are spread (gateway_balance): affinity by default, a second backend for requests without the header
    backend = parts[f"backend {contract.GATEWAY_BACKEND}"]
    unkeyed = parts.get(f"backend {contract.GATEWAY_BACKEND}_no_session")
    assert front[-1] == f"default_backend {contract.GATEWAY_BACKEND}"
    if case.get("gateway_balance", "affinity") == "leastconn":
        assert "balance leastconn" in backend and unkeyed is None
        assert not any(line.startswith(("use_backend", "hash-")) for line in front + backend)
    else:
        header = case.get("gateway_affinity_header", "X-Claude-Code-Session-Id")
        factor = case.get("gateway_affinity_balance_factor", 200)
        assert f"balance hdr({header})" in backend and "hash-type consistent" in backend
        assert [line for line in backend if line.startswith("hash-balance-factor")] == (
            [f"hash-balance-factor {factor}"] if factor else [])
        assert front[-2] == (f"use_backend {contract.GATEWAY_BACKEND}_no_session unless "
                             f"{{ req.hdr({header}) -m len 1: }}")
        assert "balance leastconn" in unkeyed
        names = [line.split()[1] for line in backend if line.startswith("server ")]
        assert names and [line.split()[1] for line in unkeyed if line.startswith("server ")] == names
        assert all(line.endswith(f" track {contract.GATEWAY_BACKEND}/{line.split()[1]}")
                   for line in unkeyed if line.startswith("server "))
    stats = parts.get("listen stats")
    assert (stats is not None) == bool(case.get("gateway_stats_listen"))
    if stats is not None:
        assert ('stats auth "${FLEET_GATEWAY_STATS_AUTH}"' in stats) == bool(case.get("gateway_stats_user"))
        assert any(line.startswith("bind ") and ("ssl crt" in line) == bool(case.get("tls")) for line in stats)
        assert STATS_PASSWORD not in rendered[name]["cfg"]
        if case.get("gateway_stats_user"):
            assert rendered[name]["env"]["FLEET_GATEWAY_STATS_AUTH"] == f"fleet-ops:{STATS_PASSWORD}"


def test_without_tiers_the_gateway_never_reads_the_body(rendered):
    """One served name (served_model_tiers empty, or naming served_model_name only): the configuration of before."""
    for name in list(CHECK_CASES) + ["live", "live_affinity", "live_leastconn", "metrics", "live_tls"]:
        text = rendered[name]["cfg"]
        assert "json_query" not in text and "fleet_model" not in text, name
        backends = [section for section in sections(text) if section.startswith("backend ")]
        assert set(backends) <= {f"backend {contract.GATEWAY_BACKEND}",
                                 f"backend {contract.GATEWAY_BACKEND}{contract.GATEWAY_UNKEYED_SUFFIX}"}, name
    assert rendered["tiers_one_name"]["cfg"].replace("tiers_one_name", "defaults") == rendered["defaults"]["cfg"]


def tier_expectations(name):
    """{backend name: (served name, its server, tiers)} of a TIER_CASES configuration."""
    tiers = contract.fleet_tier_names(SERVED, TIER_CASES[name]["served_model_tiers"])
    return {contract.gateway_backend_name(model, SERVED): (model, f"{host}-main",
                                                           [alias for alias, tier in tiers.items() if tier == model])
            for host, model in TIER_HOSTS.items()}


@pytest.mark.parametrize("name", list(TIER_CASES))
def test_tiers_give_each_served_name_its_backend_and_health_check(name, rendered, material, tmp_path):
    assert_haproxy_accepts(rendered, name, material, tmp_path)
    affinity = TIER_CASES[name].get("gateway_balance", "affinity") == "affinity"
    parts = sections(rendered[name]["cfg"])
    expected = tier_expectations(name)
    assert "backend vllm_Qwen3-4B_fast" in parts  # '+' is no backend-name character
    suffix = contract.GATEWAY_UNKEYED_SUFFIX
    assert sorted(section for section in parts if section.startswith("backend ")) == sorted(
        f"backend {backend}{extra}" for backend in expected for extra in (["", suffix] if affinity else [""]))
    for backend, (model, server, _) in expected.items():
        lines = parts[f"backend {backend}"]
        assert f'http-check expect string "\\"id\\":\\"{model}\\""' in lines
        assert [line.split()[1] for line in lines if line.startswith("server ")] == [server]
        assert ("balance leastconn" in lines) != affinity
        if affinity:
            assert [line for line in parts[f"backend {backend}{suffix}"] if line.startswith("server ")] == [
                f"server {server} 127.0.0.1:{line.split(':')[-1]} track {backend}/{server}"
                for line in lines if line.startswith("server ")]
    front = parts["frontend claude_code"]
    rules = [line for line in front if line.startswith("http-request ")]
    wait = next(i for i, line in enumerate(rules) if line.startswith("http-request wait-for-body"))
    assert rules[wait + 1] == "http-request set-var(txn.fleet_model) req.body,json_query('$.model')"
    refusal = rules[wait + 2]
    names = " ".join(model for model, _, _ in expected.values())
    assert refusal.startswith("http-request return status 404 content-type application/json lf-string ")
    assert refusal.endswith(f"if {{ var(txn.fleet_model) -m found }} !{{ var(txn.fleet_model) -m str {names} }}")
    assert len(rules) == wait + 3
    message = refusal.split("lf-string '", 1)[1].split("' if ", 1)[0]
    for model, _, aliases in expected.values():
        assert f"{'/'.join(aliases)} {model}" in message
    routes = [line for line in front if line.startswith(("use_backend", "default_backend"))]
    header = "X-Claude-Code-Session-Id"
    small = contract.gateway_backend_name(SMALL, SERVED)
    wanted = ([f"use_backend {small}{suffix} if {{ var(txn.fleet_model) -m str {SMALL} }} "
               f"!{{ req.hdr({header}) -m len 1: }}"] if affinity else [])
    wanted.append(f"use_backend {small} if {{ var(txn.fleet_model) -m str {SMALL} }}")
    if affinity:
        wanted.append(f"use_backend {contract.GATEWAY_BACKEND}{suffix} unless {{ req.hdr({header}) -m len 1: }}")
    assert routes == wanted + [f"default_backend {contract.GATEWAY_BACKEND}"]


def test_per_user_tokens_map_the_current_users_digests_and_swap_in_the_gateways_token(rendered):
    import hashlib

    from conftest import load_plugin

    tokens = load_plugin("plugins/filter/fleet_tokens.py", "fleet_tokens_filters")
    digest = {user: hashlib.sha256(tokens.fleet_user_token(USER_TOKEN_SECRET, user).encode()).hexdigest()
              for user in ("alice", "bob")}
    entries = [line.split() for line in rendered["per_user"]["map"].splitlines() if line and not line.startswith("#")]
    assert entries == [[digest["alice"], "alice"]], "alice only: bob is revoked"
    assert USER_TOKEN_SECRET not in rendered["per_user"]["map"] + rendered["per_user"]["cfg"]
    front = sections(rendered["per_user"]["cfg"])["frontend claude_code"]
    assert any(line.startswith("http-request set-var(txn.fleet_user) req.hdr(authorization)")
               and line.endswith(f"sha2(256),hex,lower,map({ROLE_TOKEN_MAP})") for line in front)
    assert any(line.startswith("http-request return status 401 ") and line.endswith(
        "unless { var(txn.fleet_user) -m found }") for line in front)
    assert 'http-request set-header Authorization "Bearer ${FLEET_GATEWAY_TOKEN}"' in front
    assert any(line.startswith("log-format ") and "user=%[var(txn.fleet_user)]" in line for line in front)
    assert rendered["per_user"]["env"]["FLEET_GATEWAY_TOKEN"] == "dummy"  # llm_api_token: only the gateways send it
    assert "set-var(txn.fleet_user)" not in rendered["defaults"]["cfg"]


def test_haproxy_refuses_the_auth_config_without_its_credentials(rendered, material, tmp_path):
    """The credentials come only from the environment: without them HAProxy refuses to start (never an open page)."""
    config = tmp_path / "haproxy.cfg"
    config.write_text(config_for(rendered, "stats_auth_tls", material))
    check = haproxy_check(config, {"FLEET_GATEWAY_STATS_AUTH": ""})
    assert check.returncode != 0 and "'auth' needs a user:password account" in check.stdout + check.stderr


@pytest.mark.parametrize("name", list(REFUSED_CASES))
def test_validate_refuses_bad_input_before_the_templates(name, rendered):
    outcome = rendered[name]
    assert "refused" in outcome and outcome["task"].endswith("Refuse bad input (nothing has been changed on this host)"), \
        outcome
    for fragment in REFUSED_CASES[name][1]:
        assert any(fragment in problem for problem in outcome["refused"]), (fragment, outcome["refused"])
    assert not any("short pass" in problem for problem in outcome["refused"])


# --------------------------------------------------------------------------------------- the live gateway
class Backend:
    """A stand-in vLLM server on 127.0.0.1: records every request it gets, answers 200 with JSON."""

    def __init__(self, port: int, name: str = "backend-a-main", model: str = SERVED):
        self.seen: list[tuple[str, str]] = []
        self.bodies: list[bytes] = []
        self.name = name
        self.model = model  # the name its /v1/models lists (changed live to fail its health check)
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def answer(self):
                backend.seen.append((self.command, self.path))
                length = int(self.headers.get("Content-Length") or 0)
                backend.bodies.append(self.rfile.read(length) if length else b"")
                delay = re.search(r"[?&]delay=([0-9.]+)", self.path)
                if delay:  # a long request (a streamed answer) held open for that many seconds
                    time.sleep(float(delay.group(1)))
                body = json.dumps({"object": "list", "data": [{"id": backend.model, "object": "model"}],
                                   "backend": self.path, "server": backend.name}, separators=(",", ":")).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = answer

            def log_message(self, *args):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                if not isinstance(sys.exc_info()[1], ConnectionError):  # HAProxy resets its health checks
                    super().handle_error(request, client_address)

        self.server = Server(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def reached(self, marker: str) -> list[tuple[str, str]]:
        return [entry for entry in self.seen if marker in entry[1]]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class LogSink:
    """A syslog datagram socket standing in for /dev/log inside the chroot (what Debian's unit bind-mounts)."""

    def __init__(self, path: Path):
        self.lines: list[str] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        path.chmod(0o666)
        self.sock.settimeout(0.2)
        self.stop = False
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self):
        while not self.stop:
            try:
                self.lines.append(self.sock.recv(65536).decode("utf-8", "replace"))
            except socket.timeout:
                continue
            except OSError:
                return

    def close(self):
        self.stop = True
        self.thread.join(timeout=5)
        self.sock.close()


def start_haproxy(text: str, env: dict, directory: Path, port: int) -> subprocess.Popen:
    config = directory / "haproxy.cfg"
    config.write_text(text)
    log = open(directory / "haproxy.log", "w")
    process = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], env=dict(os.environ, **env), stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail("haproxy exited: " + (directory / "haproxy.log").read_text()[-3000:])
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    pytest.fail("haproxy did not listen within 15 s: " + (directory / "haproxy.log").read_text()[-3000:])


def stop(process: subprocess.Popen):
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def live_config(rendered: dict, name: str, material: dict, directory: Path) -> tuple[str, Path | None]:
    """The rendered text; as root chrooted into a fresh directory with dev/log, else without chroot/user/group."""
    if AS_ROOT:
        chroot = directory / "chroot"
        (chroot / "dev").mkdir(parents=True)
        chroot.chmod(0o755)
        (chroot / "dev").chmod(0o755)
        return config_for(rendered, name, material, chroot=str(chroot)), chroot / "dev/log"
    text = config_for(rendered, name, material)
    text = re.sub(r"(?m)^    (chroot|user|group) .*\n", "", text)
    return text, None


@pytest.fixture(scope="module")
def backend(ports):
    server = Backend(ports["backend"])
    yield server
    server.close()


@contextlib.contextmanager
def running(rendered, material, tmp_path_factory, name, port):
    """A real HAProxy on the rendered configuration `name`: (process, log sink or None, directory); stopped on exit."""
    directory = tmp_path_factory.mktemp(name)
    text, log_socket = live_config(rendered, name, material, directory)
    sink = LogSink(log_socket) if log_socket else None
    process = start_haproxy(text, rendered[name]["env"], directory, port)
    try:
        yield process, sink, directory
    finally:
        stop(process)
        if sink:
            sink.close()


@pytest.fixture(scope="module")
def gateway(rendered, material, backend, tmp_path_factory, ports):
    with running(rendered, material, tmp_path_factory, "live", ports["live"]) as (process, sink, directory):
        yield {"port": ports["live"], "sink": sink, "directory": directory, "process": process}


@pytest.fixture(scope="module")
def tls_gateway(rendered, material, backend, tmp_path_factory, ports):
    with running(rendered, material, tmp_path_factory, "live_tls", ports["live_tls"]):
        yield {"port": ports["live_tls"]}


def request(port, method, path, body=None, headers=None, tls=False):
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the throwaway self-signed certificate
        connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=15, context=context)
    else:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        connection.request(method, path, body=body, headers=dict({"Authorization": "Bearer dummy"}, **(headers or {})))
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        connection.close()


def raw_exchange(port, data: bytes, wait: float = 10.0) -> tuple[bytes, float]:
    """Send raw bytes (part of a request) and read HAProxy's answer without sending more; (answer, seconds)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as connection:
        connection.sendall(data)
        received = b""
        try:
            while b"\r\n\r\n" not in received:
                chunk = connection.recv(4096)
                if not chunk:
                    break
                received += chunk
        except socket.timeout:
            pass
    return received, time.monotonic() - started


FORWARDED = [("POST", "/v1/messages?beta=true", b'{"model":"x","max_tokens":1,"messages":[]}'),
             ("POST", "/v1/messages/count_tokens?beta=true", b'{"model":"x","messages":[]}'),
             ("GET", "/v1/models", None),
             ("GET", "/health", None)]


@pytest.mark.parametrize("method,path,body", FORWARDED)
def test_claude_code_requests_reach_the_backend(method, path, body, gateway, backend):
    marker = f"probe=fwd-{method}-{path.split('?')[0].replace('/', '_')}"
    target = path + ("&" if "?" in path else "?") + marker
    status, _, answer = request(gateway["port"], method, target, body,
                                {"Content-Type": "application/json"} if body else None)
    assert status == 200 and json.loads(answer)["backend"] == target
    assert backend.reached(marker) == [(method, target)]


REFUSED = [
    ("POST", "/invocations", b'{"messages":[{"role":"user","content":"Hi"}]}', 404),
    ("GET", "/metrics", None, 404),
    ("POST", "/v1/chat/completions", b'{"model":"x","messages":[]}', 404),
    ("GET", "/v1/chat/completions", None, 404),
    ("GET", "/", None, 404),
    ("GET", "/v2/models", None, 404),
    ("GET", "/v1/messages/", None, 404),
    ("GET", "/V1/models", None, 404),
    ("GET", "/v1/models/../../metrics", None, 404),
    ("GET", "//v1/models", None, 404),
    ("POST", "/tokenize", b"{}", 404),
    ("POST", "/v1/%6Dessages", b"{}", 404),
    ("GET", "/v1/messages", None, 405),
    ("PUT", "/v1/messages", b"{}", 405),
    ("POST", "/v1/models", b"{}", 405),
    ("DELETE", "/v1/models", None, 405),
    ("HEAD", "/health", None, 405),
    ("OPTIONS", "/v1/messages", None, 405),
]


@pytest.mark.parametrize("method,path,body,expected", REFUSED)
def test_other_requests_are_answered_by_haproxy_and_never_reach_the_backend(method, path, body, expected, gateway,
                                                                            backend):
    marker = f"probe=refused-{method}-{len(backend.seen)}-{abs(hash(path))}"
    target = f"{path}?{marker}"
    status, headers, answer = request(gateway["port"], method, target, body)
    assert status == expected
    assert backend.reached(marker) == []
    if method != "HEAD":
        error = json.loads(answer)
        assert error["type"] == "error"
        assert error["error"]["type"] == ("not_found_error" if expected == 404 else "invalid_request_error")
    if expected == 405:
        assert headers.get("allow") or headers.get("Allow")


def test_an_over_size_content_length_gets_413_before_the_body_is_read(gateway, backend):
    head = (f"POST /v1/messages?probe=oversize HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            f"Content-Length: {DEFAULT_MAX_BODY + 1}\r\n\r\n").encode()
    answer, seconds = raw_exchange(gateway["port"], head + b'{"model":')
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert seconds < 1.5  # from the headers, not after a body timeout
    assert backend.reached("probe=oversize") == []
    # exactly the limit is accepted
    status, _, _ = request(gateway["port"], "POST", "/v1/messages?probe=atlimit", b"x" * 1024,
                           {"Content-Type": "application/json"})
    assert status == 200 and backend.reached("probe=atlimit")


def test_a_chunked_body_gets_411(gateway, backend):
    data = (b"POST /v1/messages?probe=chunked HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/json\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
    answer, _ = raw_exchange(gateway["port"], data)
    assert answer.startswith(b"HTTP/1.1 411 "), answer[:200]
    assert backend.reached("probe=chunked") == []


def test_a_stalled_body_gets_408_and_never_reaches_the_backend(gateway, backend):
    head = (b"POST /v1/messages?probe=slowbody HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n")
    answer, seconds = raw_exchange(gateway["port"], head + b'{"model":"x"', wait=8)
    assert answer.startswith(b"HTTP/1.1 408 "), (answer[:200], seconds)
    assert 1.5 <= seconds < 6  # gateway_timeout_http_request is 2s in this configuration
    assert backend.reached("probe=slowbody") == []


def test_runtime_socket_and_logging_work_inside_the_chroot(gateway, rendered):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(rendered["live"]["cfg"].split("stats socket ", 1)[1].split()[0])
        client.sendall(f"show servers state {contract.GATEWAY_BACKEND}\n".encode())
        state = b""
        while chunk := client.recv(4096):
            state += chunk
    assert b"backend-a-main" in state
    if not AS_ROOT:
        pytest.skip("chroot needs root: only the runtime socket was checked")
    chrooted = subprocess.run(["ls", "-l", f"/proc/{gateway['process'].pid}/root"], capture_output=True, text=True)
    assert str(gateway["directory"] / "chroot") in chrooted.stdout
    request(gateway["port"], "GET", "/metrics?probe=logged")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any("/metrics?probe=logged" in line for line in gateway["sink"].lines):
        time.sleep(0.1)
    assert any('"GET /metrics?probe=logged HTTP/1.1"' in line and " 404 " in line for line in gateway["sink"].lines), \
        gateway["sink"].lines[-5:]


def s_client(port, *options) -> str:
    result = subprocess.run([OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", *options], input="",
                            capture_output=True, text=True, timeout=30)
    return result.stdout + result.stderr


def test_tls_refuses_tls11_and_ciphers_without_forward_secrecy(tls_gateway, backend):
    port = tls_gateway["port"]
    old = s_client(port, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
    if "no protocols available" in old:
        pytest.skip("this openssl cannot offer TLS 1.1")
    assert "alert protocol version" in old and "Cipher is (NONE)" in old, old[-1500:]
    rsa = s_client(port, "-tls1_2", "-cipher", "AES128-SHA256")
    assert "alert handshake failure" in rsa and "Cipher is (NONE)" in rsa, rsa[-1500:]
    good = s_client(port, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")
    assert "Cipher is ECDHE-RSA-AES128-GCM-SHA256" in good, good[-1500:]
    assert "TLS session ticket" not in good  # no-tls-tickets
    status, _, _ = request(port, "GET", "/v1/models?probe=tls", tls=True)
    assert status == 200 and backend.reached("probe=tls")
    status, _, _ = request(port, "POST", "/invocations?probe=tlsinv", b"{}", tls=True)
    assert status == 404 and not backend.reached("probe=tlsinv")


# ------------------------------------------------------------------------------ session affinity (gateway_balance)
# Three stand-in servers behind two more gateways rendered from the same template: gateway_balance affinity (the
# default: consistent hashing on Claude Code's session header, bounded load, requests without it by least
# connections) and leastconn. Each stand-in names itself in its answer, so every request's server is known.
SESSION_HEADER = "X-Claude-Code-Session-Id"  # what Claude Code 2.1.331 sends (seen with a recording server)


@pytest.fixture(scope="module")
def trio(ports):
    servers = {f"{host}-main": Backend(port, f"{host}-main") for host, port in zip(TRIO, ports["trio"])}
    yield servers
    for server in servers.values():
        server.close()


def trio_gateway(rendered, material, trio, tmp_path_factory, ports, name):
    """The gateway `name` in front of the three stand-ins, once its health checks see them all UP."""
    with running(rendered, material, tmp_path_factory, name, ports[name]):
        gateway = {"port": ports[name], "socket": socket_of(rendered, name)}
        wait_for_status(gateway["socket"], {server: "UP" for server in trio})
        yield gateway


@pytest.fixture(scope="module")
def affinity_gateway(rendered, material, trio, tmp_path_factory, ports):
    yield from trio_gateway(rendered, material, trio, tmp_path_factory, ports, "live_affinity")


@pytest.fixture(scope="module")
def leastconn_gateway(rendered, material, trio, tmp_path_factory, ports):
    yield from trio_gateway(rendered, material, trio, tmp_path_factory, ports, "live_leastconn")


def socket_of(rendered: dict, name: str) -> str:
    return rendered[name]["cfg"].split("stats socket ", 1)[1].split()[0]


def runtime(path: str, command: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(path)
        client.sendall(f"{command}\n".encode())
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    return answer.decode()


def stat_rows(path: str, backend: str) -> list[dict]:
    import csv
    import io
    return [row for row in csv.DictReader(io.StringIO(runtime(path, "show stat").lstrip("# ")))
            if row["pxname"] == backend and row["svname"] not in ("FRONTEND", "BACKEND")]


def statuses(path: str, backend: str = contract.GATEWAY_BACKEND) -> dict[str, str]:
    return {row["svname"]: row["status"] for row in stat_rows(path, backend)}


def settled(gateway: dict) -> int:
    """The gateway's port once no request runs on the main backend: the bound counts running requests, and
    HAProxy counts one that has just been answered for a moment after its client has the answer (measured:
    about 1 in 100 back-to-back requests of one conversation then moves, as a 5-minute burst would)."""
    deadline = time.monotonic() + 5
    while any(int(row["scur"] or 0) for row in stat_rows(gateway["socket"], contract.GATEWAY_BACKEND)):
        assert time.monotonic() < deadline, "requests still running on the gateway"
        time.sleep(0.005)
    return gateway["port"]


def wait_for_status(path: str, wanted: dict[str, str], backend: str = contract.GATEWAY_BACKEND, limit: float = 15):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if all(statuses(path, backend).get(name) == status for name, status in wanted.items()):
            return
        time.sleep(0.1)
    pytest.fail(f"servers not {wanted} within {limit} s: {statuses(path, backend)}")


def served_by(port: int, session: str | None = None, delay: float = 0) -> str:
    """The stand-in server that answered one /v1/messages request (with the session header unless None)."""
    headers = {"Content-Type": "application/json"}
    if session is not None:
        headers[SESSION_HEADER] = session
    status, _, answer = request(port, "POST", "/v1/messages?beta=true" + (f"&delay={delay}" if delay else ""),
                                b'{"model":"x","max_tokens":1,"messages":[]}', headers)
    assert status == 200, answer
    return json.loads(answer)["server"]


class Held:
    """A long request (a streamed answer) running in the background; .server once it is answered."""

    def __init__(self, port: int, session: str | None, seconds: float):
        self.server = None
        self.thread = threading.Thread(target=self.run, args=(port, session, seconds), daemon=True)
        self.thread.start()

    def run(self, port, session, seconds):
        self.server = served_by(port, session, seconds)

    def result(self) -> str:
        self.thread.join(timeout=30)
        return self.server


def held_arrivals(servers: dict) -> int:
    """How many long (held) requests the stand-ins have received so far."""
    return sum(1 for server in servers.values() for _, path in list(server.seen) if "delay=" in path)


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def homes(gateway: dict, count: int, prefix: str) -> dict[str, str]:
    """count conversations and the server each one's requests go to on a quiet gateway."""
    return {f"{prefix}-{i}": served_by(settled(gateway), f"{prefix}-{i}") for i in range(count)}


def quiet_servers(gateway: dict, sessions) -> dict[str, str]:
    return {session: served_by(settled(gateway), session) for session in sessions}


def test_affinity_keeps_each_conversation_on_one_server_and_spreads_conversations(affinity_gateway, trio):
    port = affinity_gateway["port"]
    home = homes(affinity_gateway, 240, "spread")
    counts = {name: list(home.values()).count(name) for name in trio}
    assert all(count >= 40 for count in counts.values()), counts  # 80 each on average
    for session in list(home)[:12]:
        assert {served_by(settled(affinity_gateway), session) for _ in range(8)} == {home[session]}


def test_requests_without_the_header_go_by_least_connections(affinity_gateway, trio):
    """Not HAProxy's fallback for a missing hash header (round robin): two servers busy, the idle one takes all."""
    port = affinity_gateway["port"]
    held = []
    for _ in range(2):  # each held request on its server before the next is sent (no fixed sleep: loaded CI)
        arrived = held_arrivals(trio)
        held.append(Held(port, None, 6.0))
        wait_until(lambda: held_arrivals(trio) > arrived)
    quick = [served_by(port) for _ in range(5)] + [served_by(port, "")]  # an empty header is no conversation
    busy = {request.result() for request in held}
    assert len(busy) == 2 and len(set(quick)) == 1 and set(quick).isdisjoint(busy), (busy, quick)


def test_a_conversation_stays_home_on_an_evenly_busy_fleet(affinity_gateway, trio):
    port = affinity_gateway["port"]
    home = homes(affinity_gateway, 30, "even")
    one_each = {server: next(s for s, h in home.items() if h == server) for server in trio}
    held = [Held(port, session, 2.0) for session in one_each.values()]
    time.sleep(0.5)
    others = [session for session in home if session not in one_each.values()][:9]
    assert [served_by(port, session) for session in others] == [home[session] for session in others]
    assert [request.result() for request in held] == list(one_each)


def test_bounded_load_sends_a_busy_servers_overflow_elsewhere(affinity_gateway, trio):
    """Six conversations of one server at once: the bound (200%: twice the average) keeps some there, moves
    the rest; once the burst is over every one of them is back on its server."""
    port = affinity_gateway["port"]
    home = homes(affinity_gateway, 60, "burst")
    crowded = max(trio, key=lambda server: list(home.values()).count(server))
    sessions = [session for session, server in home.items() if server == crowded][:6]
    assert len(sessions) == 6, home
    held = []
    for session in sessions:
        held.append(Held(port, session, 2.0))
        time.sleep(0.1)
    servers = [request.result() for request in held]
    assert 2 <= servers.count(crowded) < 6, servers
    assert list(quiet_servers(affinity_gateway, sessions).values()) == [crowded] * 6


def test_leastconn_sends_one_conversations_requests_to_whichever_server_is_idle(leastconn_gateway, trio):
    """What gateway_balance leastconn does (and the gateway did before): the turn after a long one goes elsewhere."""
    port = leastconn_gateway["port"]
    held = Held(port, "one-conversation", 2.0)
    time.sleep(0.3)
    quick = [served_by(port, "one-conversation") for _ in range(4)]
    assert held.result() not in quick, quick


def test_draining_a_server_moves_its_conversations_and_only_those(affinity_gateway, trio, monkeypatch):
    """The vllm role's drain (module haproxy_server, on the main backend only): the server's conversations go to
    the others, every other conversation stays where it was, requests without the header leave it too, and the
    drain waits for a request of its own still running in the header-less backend. Back to ready: all return."""
    haproxy_module = load_module()
    port, path = affinity_gateway["port"], affinity_gateway["socket"]
    home = homes(affinity_gateway, 150, "drain")
    drained = "trio-b-main"
    # three long header-less requests, one on each server (least connections), so one runs on the drained one
    running = []
    for _ in trio:
        running.append(Held(port, None, 2.5))
        time.sleep(0.3)
    result = run_module(monkeypatch, haproxy_module.main, {"socket": path, "backend": contract.GATEWAY_BACKEND,
                                                           "server": drained, "state": "drain", "timeout": 30})
    assert not result.failed and result.result["changed"] is True and result.result["sessions"] == 0, result.result
    assert result.result["waited"] >= 1.0, result.result  # its header-less request finished first
    assert sorted(request.result() for request in running) == sorted(trio)
    assert statuses(path, f"{contract.GATEWAY_BACKEND}_no_session")[drained] == "DRAIN"
    now = quiet_servers(affinity_gateway, home)
    moved = {session for session in home if now[session] != home[session]}
    assert moved == {session for session in home if home[session] == drained}
    assert moved and drained not in now.values()
    assert drained not in {served_by(port) for _ in range(6)}
    result = run_module(monkeypatch, haproxy_module.main, {"socket": path, "backend": contract.GATEWAY_BACKEND,
                                                           "server": drained, "state": "ready", "timeout": 30})
    assert not result.failed and result.result["status"].startswith("UP")
    assert quiet_servers(affinity_gateway, home) == home


def test_a_failed_server_moves_its_conversations_and_only_those(affinity_gateway, trio, ports):
    port, path = affinity_gateway["port"], affinity_gateway["socket"]
    home = homes(affinity_gateway, 150, "fail")
    failed = "trio-c-main"
    trio[failed].close()
    try:
        wait_for_status(path, {failed: "DOWN"})
        now = quiet_servers(affinity_gateway, home)
        assert {s for s in home if now[s] != home[s]} == {s for s in home if home[s] == failed} != set()
    finally:
        trio[failed] = Backend(ports["trio"][TRIO.index("trio-c")], failed)
    wait_for_status(path, {failed: "UP"})
    assert quiet_servers(affinity_gateway, home) == home


def load_module():
    from conftest import load_plugin
    return load_plugin("plugins/modules/haproxy_server.py", "haproxy_server_module")


# ------------------------------------------------------------------------------ tiers on different models (live)
# Two stand-ins, each listing only its own served name on /v1/models, behind a gateway with served_model_tiers
# {haiku: SMALL} (affinity, the default): each request goes to the servers of the name in its body's "model".
SMALL_BACKEND = contract.gateway_backend_name(SMALL, SERVED)


@pytest.fixture(scope="module")
def tier_servers(ports):
    servers = {f"{host}-main": Backend(ports["tiers"][host], f"{host}-main", model)
               for host, model in TIER_HOSTS.items()}
    yield servers
    for server in servers.values():
        server.close()


@pytest.fixture(scope="module")
def tiers_gateway(rendered, material, tier_servers, tmp_path_factory, ports):
    with running(rendered, material, tmp_path_factory, "live_tiers", ports["live_tiers"]):
        gateway = {"port": ports["live_tiers"], "socket": socket_of(rendered, "live_tiers")}
        wait_for_status(gateway["socket"], {"tier-big-main": "UP"})
        wait_for_status(gateway["socket"], {"tier-small-main": "UP"}, SMALL_BACKEND)
        yield gateway


def tier_request(port, body: bytes, marker: str, session: str | None = "tier-session",
                 path: str = "/v1/messages?beta=true"):
    headers = {"Content-Type": "application/json"}
    if session is not None:
        headers[SESSION_HEADER] = session
    return request(port, "POST", f"{path}&{marker}", body, headers)


def reached_by(servers: dict, marker: str) -> list[str]:
    return sorted(name for name, server in servers.items() if server.reached(marker))


@pytest.mark.parametrize("session", ["tier-session", None], ids=["with-session", "without-session"])
@pytest.mark.parametrize("path", ["/v1/messages?beta=true", "/v1/messages/count_tokens?beta=true"])
def test_each_request_reaches_only_the_servers_of_its_model(session, path, tiers_gateway, tier_servers):
    for model, server in ((SERVED, "tier-big-main"), (SMALL, "tier-small-main")):
        marker = f"probe=tier-{abs(hash((session, path, model)))}"
        for _ in range(4):
            status, _, answer = tier_request(tiers_gateway["port"], json.dumps(
                {"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "Hi"}]}).encode(),
                marker, session, path)
            assert status == 200 and json.loads(answer)["server"] == server, (model, answer)
        assert reached_by(tier_servers, marker) == [server]


def test_a_large_body_with_model_first_is_routed_by_it(tiers_gateway, tier_servers):
    """What Claude Code sends (model is its body's first key, recorded from CLI 2.1.332): 300 KB, far beyond the
    buffer HAProxy reads the model from (about 15 KiB), reaches the small model's server whole."""
    body = json.dumps({"model": SMALL, "messages": [{"role": "user", "content": "x" * 300_000}],
                       "max_tokens": 1}).encode()
    status, _, answer = tier_request(tiers_gateway["port"], body, "probe=tier-large-first")
    assert status == 200 and json.loads(answer)["server"] == "tier-small-main"
    assert reached_by(tier_servers, "probe=tier-large-first") == ["tier-small-main"]
    assert tier_servers["tier-small-main"].bodies[-1] == body


@pytest.mark.parametrize("body,why", [
    (json.dumps({"messages": [{"role": "user", "content": "x" * 300_000}], "model": SMALL}).encode(),
     "model beyond the buffer"),
    (b"model: " + SMALL.encode(), "not JSON"),
    (json.dumps({"max_tokens": 1}).encode(), "no model"),
], ids=["model-last-300k", "not-json", "no-model"])
def test_a_body_whose_model_cannot_be_read_goes_to_served_model_name(body, why, tiers_gateway, tier_servers):
    """Documented: such a request goes to served_model_name's servers (which check the name themselves: vLLM
    answers 404 for another); it never gets another tier's server by accident."""
    marker = f"probe=tier-unread-{abs(hash(why))}"
    status, _, answer = tier_request(tiers_gateway["port"], body, marker)
    assert status == 200 and json.loads(answer)["server"] == "tier-big-main", why
    assert reached_by(tier_servers, marker) == ["tier-big-main"]


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "qwen3-4b+fast", "", 'evil"}', 7])
def test_a_model_no_tier_uses_gets_the_gateways_404_naming_the_served_models(model, tiers_gateway, tier_servers):
    marker = f"probe=tier-unknown-{abs(hash(str(model)))}"
    for session in ("tier-session", None):
        status, headers, answer = tier_request(tiers_gateway["port"], json.dumps(
            {"model": model, "max_tokens": 1, "messages": []}).encode(), marker, session)
        assert status == 404 and headers.get("content-type") == "application/json", answer
        error = json.loads(answer)
        assert error["type"] == "error" and error["error"]["type"] == "not_found_error"
        message = error["error"]["message"]
        assert message.startswith(f"model: {model} is not served by this fleet"), message
        assert f"sonnet/opus {SERVED}, haiku {SMALL}" in message, message
    assert reached_by(tier_servers, marker) == []


def test_bodiless_requests_go_to_served_model_name(tiers_gateway, tier_servers):
    status, _, answer = request(tiers_gateway["port"], "GET", "/v1/models?probe=tier-models")
    assert status == 200 and json.loads(answer)["data"][0]["id"] == SERVED
    assert reached_by(tier_servers, "probe=tier-models") == ["tier-big-main"]


def test_each_backends_health_check_requires_its_own_name(tiers_gateway, tier_servers):
    """The small model's server starts listing another name: its own backend takes it out (its requests then get
    503, never the big model's server); the big model's backend is untouched. Back to its name: back in."""
    small = tier_servers["tier-small-main"]
    small.model = SERVED  # the other tier's name is not this backend's
    try:
        wait_for_status(tiers_gateway["socket"], {"tier-small-main": "DOWN"}, SMALL_BACKEND)
        assert statuses(tiers_gateway["socket"]) == {"tier-big-main": "UP"}
        status, _, _ = tier_request(tiers_gateway["port"], json.dumps({"model": SMALL}).encode(), "probe=tier-down")
        assert status == 503 and reached_by(tier_servers, "probe=tier-down") == []
    finally:
        small.model = SMALL
        wait_for_status(tiers_gateway["socket"], {"tier-small-main": "UP"}, SMALL_BACKEND)


def test_the_vllm_roles_drain_works_in_a_tiers_backend(tiers_gateway, tier_servers, monkeypatch):
    """The vllm role drains an instance in gateway_backend_name(its served name): the small model's server."""
    haproxy_module = load_module()
    path = tiers_gateway["socket"]
    for state, status in (("drain", "DRAIN"), ("ready", "UP")):
        result = run_module(monkeypatch, haproxy_module.main, {"socket": path, "backend": SMALL_BACKEND,
                                                               "server": "tier-small-main", "state": state,
                                                               "timeout": 30})
        assert not result.failed and result.result["changed"] is True, result.result
        assert statuses(path, SMALL_BACKEND)["tier-small-main"] == status
        assert statuses(path, SMALL_BACKEND + contract.GATEWAY_UNKEYED_SUFFIX)["tier-small-main"] == status
    assert statuses(path) == {"tier-big-main": "UP"}


# ------------------------------------------------------------------------------------------ Prometheus exporter
def local_non_loopback_address():
    """An address of this machine that is not loopback (its packets to itself carry it as source), or None."""
    listed = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True)
    for match in re.finditer(r"inet (\d+\.\d+\.\d+\.\d+)/", listed.stdout):
        if not match.group(1).startswith("127."):
            return match.group(1)
    return None


@pytest.fixture(scope="module")
def metrics_gateway(rendered, material, backend, tmp_path_factory, ports):
    with running(rendered, material, tmp_path_factory, "metrics", ports["metrics"]):
        yield {"port": ports["metrics"], "claude_port": ports["metrics_claude"]}


def test_no_monitoring_hosts_no_exporter_listener(rendered):
    assert "frontend prometheus" not in rendered["defaults"]["cfg"]
    assert "prometheus-exporter" not in rendered["defaults"]["cfg"]


def test_the_exporter_answers_the_monitoring_sources_on_its_own_port_only(metrics_gateway, backend):
    status, _, body = request(metrics_gateway["port"], "GET", "/metrics")
    backend_series = f'haproxy_backend_active_servers{{proxy="{contract.GATEWAY_BACKEND}"}}'
    assert status == 200 and backend_series in body.decode(), body[:500]
    status, _, _ = request(metrics_gateway["port"], "GET", "/stats")
    assert status == 404
    status, _, _ = request(metrics_gateway["port"], "POST", "/metrics", b"{}")
    assert status == 404
    # The workstations' port never serves it (the claude_code frontend answers 404 itself).
    status, _, _ = request(metrics_gateway["claude_port"], "GET", "/metrics?probe=claude-port")
    assert status == 404 and not backend.reached("probe=claude-port")


def test_the_exporter_closes_a_connection_from_anyone_else(metrics_gateway):
    address = local_non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    answer = b""
    try:
        with socket.create_connection((address, metrics_gateway["port"]), timeout=10) as connection:
            connection.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = connection.recv(4096)
    except (ConnectionResetError, BrokenPipeError):
        pass  # closed by tcp-request connection reject, before a byte was read
    assert answer == b"", answer[:200]
    # The same request from loopback is answered: the listener is up, it is the source that was refused.
    status, _, _ = request(metrics_gateway["port"], "GET", "/metrics")
    assert status == 200
