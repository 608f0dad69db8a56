"""haproxy_map against the real HAProxy (Debian's): a token map replaced live, atomically, no restart.

The frontend below uses the same pipeline as the gateway's template: the Bearer token's SHA-256 looked
up in the map names the user; an unknown token gets 401 from HAProxy itself.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import load_plugin, run_module

haproxy_map = load_plugin("plugins/modules/haproxy_map.py", "haproxy_map_module")
pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="Debian's haproxy is not installed")


def digest(token):
    return hashlib.sha256(token.encode()).hexdigest()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def gateway(tmp_path):
    port, sock, users = free_port(), tmp_path / "admin.sock", tmp_path / "users.map"
    users.write_text(f"{digest('tok-alice')} alice\n")
    config = tmp_path / "haproxy.cfg"
    config.write_text(f"""
global
    stats socket {sock} mode 600 level admin
defaults
    mode http
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend fe
    bind 127.0.0.1:{port}
    http-request set-var(txn.fleet_user) req.hdr(authorization),regsub("^Bearer +",""),sha2(256),hex,lower,map({users})
    http-request return status 401 content-type text/plain string "no" unless {{ var(txn.fleet_user) -m found }}
    http-request return status 200 content-type text/plain lf-string "user=%[var(txn.fleet_user)]"
""")
    proc = subprocess.Popen(["haproxy", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    yield {"port": port, "socket": str(sock), "map": str(users), "proc": proc}
    proc.terminate()
    proc.wait(timeout=10)


def ask(port, token):
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


def run_map(monkeypatch, check_mode=False, **args):
    exited = run_module(monkeypatch, haproxy_map.main, args, check_mode=check_mode)
    return exited.result, exited.failed


def test_adding_and_revoking_users_live_without_restart(gateway, monkeypatch):
    port = gateway["port"]
    assert ask(port, "tok-alice") == (200, "user=alice") and ask(port, "tok-bob")[0] == 401
    wanted = {digest("tok-alice"): "alice", digest("tok-bob"): "bob"}

    result, failed = run_map(monkeypatch, check_mode=True, socket=gateway["socket"], map=gateway["map"],
                             entries=wanted)
    assert not failed and result["changed"] and result["added"] == [digest("tok-bob")]
    assert ask(port, "tok-bob")[0] == 401, "check mode must not change the running map"

    result, failed = run_map(monkeypatch, socket=gateway["socket"], map=gateway["map"], entries=wanted)
    assert not failed and result["changed"] and result["version"]
    assert ask(port, "tok-bob") == (200, "user=bob") and ask(port, "tok-alice") == (200, "user=alice")

    result, failed = run_map(monkeypatch, socket=gateway["socket"], map=gateway["map"], entries=wanted)
    assert not failed and not result["changed"]

    result, failed = run_map(monkeypatch, socket=gateway["socket"], map=gateway["map"],
                             entries={digest("tok-bob"): "bob"})
    assert not failed and result["removed"] == [digest("tok-alice")]
    assert ask(port, "tok-alice")[0] == 401 and ask(port, "tok-bob") == (200, "user=bob")
    assert gateway["proc"].poll() is None, "HAProxy kept running: no restart"


def test_a_map_the_running_config_does_not_load_fails_with_the_fix(gateway, monkeypatch):
    result, failed = run_map(monkeypatch, socket=gateway["socket"], map="/etc/haproxy/other.map", entries={})
    assert failed and "/etc/haproxy/other.map" in result["msg"] and "Fix:" in result["msg"]


def test_missing_socket(monkeypatch, tmp_path):
    result, failed = run_map(monkeypatch, socket=str(tmp_path / "none.sock"), map="/x.map", entries={},
                             missing_ok=True)
    assert not failed and not result["changed"]
    result, failed = run_map(monkeypatch, socket=str(tmp_path / "none.sock"), map="/x.map", entries={})
    assert failed and "Fix:" in result["msg"]
