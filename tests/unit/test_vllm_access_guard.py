"""The vLLM access guard (roles/vllm/files/claude_vllm_fleet_guard.py), driven directly as ASGI middleware.

Each request goes through AccessGuard into `recording_inner_app`, a stand-in for vLLM that records what
reached it; the guard loaded by a real vLLM (--middleware) runs in the Molecule scenarios (molecule/vllm).
Policy files are written the way Ansible writes them: a new file moved into place with os.replace.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import threading

import pytest

from conftest import REPO, load_plugin

GUARD_FILE = "roles/vllm/files/claude_vllm_fleet_guard.py"
guard = load_plugin(GUARD_FILE, "claude_vllm_fleet_guard")

ALICE_TOKEN = "sk-alice-0123456789"
BOB_TOKEN = "sk-bob-9876543210"
CLAUDE_CODE_REQUESTS = [
    {"method": "POST", "path": "/v1/messages"},
    {"method": "POST", "path": "/v1/messages/count_tokens"},
    {"method": "GET", "path": "/v1/models"},
]


def digest(token):
    return hashlib.sha256(token.encode()).hexdigest()


def policy_data(**changes):
    """A policy like the role writes (Claude Code's requests, two users, one metrics network), with `changes`."""
    data = {
        "format": 1,
        "require_token": True,
        "requests": CLAUDE_CODE_REQUESTS,
        "tokens": {digest(ALICE_TOKEN): "alice", digest(BOB_TOKEN): "bob"},
        "metrics_sources": ["10.9.0.0/16", "192.0.2.7"],
    }
    data.update(changes)
    return data


def write_policy(path, data):
    """Write `data` (a dict as JSON, or raw str/bytes) to a new file and move it over `path`, as Ansible does."""
    if isinstance(data, dict):
        data = json.dumps(data, indent=4, sort_keys=True) + "\n"
    if isinstance(data, str):
        data = data.encode()
    new = path.with_name(path.name + ".new")
    new.write_bytes(data)
    os.replace(new, path)


# --- the ASGI side: a recording inner app, scopes, one call ------------------------------------------------

class RecordingInnerApp:
    """Stands in for vLLM: records every scope that reaches it and answers HTTP with `status`."""

    def __init__(self, status=200):
        self.status = status
        self.scopes = []

    async def __call__(self, scope, receive, send):
        self.scopes.append(scope)
        if scope["type"] == "lifespan":
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            return
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b"from vllm"})

    @property
    def paths(self):
        return [scope.get("path") for scope in self.scopes]


def http_scope(method, path, headers=(), client="127.0.0.1"):
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "scheme": "http",
            "method": method, "path": path, "raw_path": path.encode("utf-8", "surrogateescape"),
            "query_string": b"", "root_path": "", "headers": [(k.lower(), v) for k, v in headers],
            "client": None if client is None else (client, 54321), "server": ("127.0.0.1", 8000)}


def bearer(token):
    return [(b"authorization", f"Bearer {token}".encode())]


class Response:
    def __init__(self, messages):
        self.messages = messages
        start = messages[0]
        self.status = start.get("status")
        self.headers = dict(start.get("headers", []))
        self.body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")

    def error(self):
        """The Anthropic-style error body: (type, message); fails unless the body is one."""
        assert self.headers[b"content-type"] == b"application/json"
        assert int(self.headers[b"content-length"]) == len(self.body)
        data = json.loads(self.body)
        assert data["type"] == "error" and set(data["error"]) == {"type", "message"}
        return data["error"]["type"], data["error"]["message"]


def call(app, scope, incoming=({"type": "http.request", "body": b"", "more_body": False},)):
    """Run one ASGI call to completion; return what the app sent."""
    sent, queue = [], list(incoming)

    async def receive():
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def request(app, method, path, headers=(), client="127.0.0.1"):
    return Response(call(app, http_scope(method, path, headers, client)))


@pytest.fixture
def recording_inner_app():
    return RecordingInnerApp()


@pytest.fixture
def policy_file(tmp_path):
    path = tmp_path / "access-policy.json"
    write_policy(path, policy_data())
    return path


@pytest.fixture
def app(policy_file, recording_inner_app):
    return guard.AccessGuard(recording_inner_app, policy_path=str(policy_file))


@pytest.fixture
def access_log():
    """The access logger's lines, formatted as the journal gets them (the logger does not propagate)."""
    lines = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(logging.Formatter("claude-vllm-fleet access: %(message)s"))
    logger = logging.getLogger("claude_vllm_fleet.access")
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


# --- policy validation ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("changes", "expected"), [
    ({"extra": 1, "zzz": 2}, "unknown keys extra, zzz"),
    ({"format": 2}, "format must be 1, got 2"),
    ({"format": None}, "format must be 1, got None"),
    ({"format": True}, "format must be 1, got True"),
    ({"format": "1"}, "format must be 1, got '1'"),
    ({"require_token": "yes"}, "require_token must be true or false"),
    ({"require_token": None}, "require_token must be true or false"),
    ({"requests": 5}, "requests must be a list"),
    ({"requests": {"method": "GET", "path": "/v1/models"}}, "requests must be a list"),
    ({"requests": [{"method": "GET"}]}, "each of requests must be {method, path}, got {'method': 'GET'}"),
    ({"requests": [{"method": "GET", "path": "/x", "port": 1}]}, "each of requests must be {method, path}"),
    ({"requests": ["GET /v1/models"]}, "each of requests must be {method, path}"),
    ({"requests": [{"method": "get", "path": "/v1/models"}]}, "request method 'get' is not an upper-case HTTP"),
    ({"requests": [{"method": "", "path": "/v1/models"}]}, "request method '' is not"),
    ({"requests": [{"method": "GET /", "path": "/v1/models"}]}, "request method 'GET /' is not"),
    ({"requests": [{"method": 7, "path": "/v1/models"}]}, "request method 7 is not"),
    ({"requests": [{"method": "GET", "path": "v1/models"}]}, "request path 'v1/models' must start with /"),
    ({"requests": [{"method": "GET", "path": "/v1 models"}]}, "request path '/v1 models' must start with /"),
    ({"requests": [{"method": "GET", "path": "/v1/models?x=1"}]}, "hold no space, ? or #"),
    ({"requests": [{"method": "GET", "path": "/v1/models#x"}]}, "hold no space, ? or #"),
    ({"requests": [{"method": "GET", "path": "/v1/models\n"}]}, "request path '/v1/models\\n' must"),
    ({"requests": [{"method": "GET", "path": None}]}, "request path None must"),
    ({"requests": [{"method": "GET", "path": "/metrics"}]}, "/metrics is allowed by metrics_sources, not by"),
    ({"tokens": ["abc"]}, "tokens must map SHA-256 digests to user names"),
    ({"tokens": {digest(ALICE_TOKEN).upper(): "alice"}}, "is not 64 lower-case hex digits"),
    ({"tokens": {digest(ALICE_TOKEN)[:63]: "alice"}}, "is not 64 lower-case hex digits"),
    ({"tokens": {"g" * 64: "alice"}}, "token digest 'gggggggggggg'... is not 64 lower-case hex digits"),
    ({"tokens": {digest(ALICE_TOKEN): ""}}, "the user of a token must be a printable name without spaces"),
    ({"tokens": {digest(ALICE_TOKEN): "al ice"}}, "the user of a token must be a printable name"),
    ({"tokens": {digest(ALICE_TOKEN): "al\nice"}}, "the user of a token must be a printable name"),
    ({"tokens": {digest(ALICE_TOKEN): "a" * 129}}, "the user of a token must be a printable name"),
    ({"tokens": {digest(ALICE_TOKEN): 5}}, "the user of a token must be a printable name"),
    ({"tokens": {}}, "require_token is true but no token is accepted"),
    ({"tokens": None}, "require_token is true but no token is accepted"),
    ({"metrics_sources": ["prometheus.example"]}, "metrics source 'prometheus.example' is not an IP address"),
    ({"metrics_sources": ["10.0.0.0/33"]}, "metrics source '10.0.0.0/33' is not an IP address or network"),
    ({"metrics_sources": "10.0.0.0/8"}, "metrics_sources must be a list"),
    ({"metrics_sources": 10}, "metrics_sources must be a list"),
])
def test_an_invalid_policy_is_refused_with_the_problem_named(changes, expected):
    with pytest.raises(guard.PolicyError) as caught:
        guard.Policy(policy_data(**changes), source="/etc/vllm/access-policy.json")
    assert str(caught.value).startswith("/etc/vllm/access-policy.json: ")
    assert expected in str(caught.value)


@pytest.mark.parametrize("data", [[], "policy", None, 1])
def test_a_policy_that_is_not_an_object_is_refused(data):
    with pytest.raises(guard.PolicyError, match="the policy must be a JSON object"):
        guard.Policy(data)


def test_a_valid_policy_lists_the_routes_with_head_where_get_is():
    policy = guard.Policy(policy_data())
    assert policy.routes == {"/v1/messages": {"POST"}, "/v1/messages/count_tokens": {"POST"},
                             "/v1/models": {"GET", "HEAD"}, "/health": {"GET", "HEAD"}}
    assert policy.user_of(ALICE_TOKEN) == "alice" and policy.user_of(BOB_TOKEN) == "bob"
    assert policy.user_of("sk-someone-else") is None and policy.user_of("") is None


def test_without_require_token_no_token_is_needed():
    policy = guard.Policy(policy_data(require_token=False, tokens={}, requests=None, metrics_sources=None))
    assert policy.routes == {"/health": {"GET", "HEAD"}}
    assert not policy.require_token and policy.may_scrape("127.0.0.1")


def test_check_accepts_a_valid_policy(policy_file, capsys):
    assert guard.main(["--check", str(policy_file)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{policy_file}: valid; 2 token(s), 4 path(s)\n" and err == ""


@pytest.mark.parametrize(("content", "expected"), [
    (policy_data(format=2), "format must be 1"),
    (policy_data(requests=5), "requests must be a list"),
    ("{", "is not valid JSON"),
    ("[" * 100_000, "is not valid JSON"),
])
def test_check_refuses_an_invalid_policy_with_exit_1(tmp_path, capsys, content, expected):
    path = tmp_path / "access-policy.json"
    write_policy(path, content)
    assert guard.main(["--check", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and str(path) in err and expected in err


def test_check_refuses_a_missing_file_with_exit_1(tmp_path, capsys):
    assert guard.main(["--check", str(tmp_path / "absent.json")]) == 1
    assert "cannot open the access policy" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["--check"], ["--lint", "policy.json"], ["--check", "a.json", "b.json"]])
def test_check_usage_errors_exit_2(argv, capsys):
    assert guard.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("usage: claude_vllm_fleet_guard.py --check POLICY_FILE")


def test_check_runs_as_the_roles_validate_command(policy_file, tmp_path):
    """The role's `validate:` runs the file as a script with an isolated interpreter."""
    good = subprocess.run([sys.executable, "-I", str(REPO / GUARD_FILE), "--check", str(policy_file)],
                          capture_output=True, text=True, timeout=60)
    assert (good.returncode, good.stderr) == (0, "") and "valid" in good.stdout
    bad = tmp_path / "bad.json"
    write_policy(bad, policy_data(tokens={}))
    refused = subprocess.run([sys.executable, "-I", str(REPO / GUARD_FILE), "--check", str(bad)],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "no token is accepted" in refused.stderr
    assert "Traceback" not in refused.stderr


# --- reading the policy file -----------------------------------------------------------------------------

def test_a_symlink_is_not_followed(policy_file, tmp_path):
    link = tmp_path / "link.json"
    link.symlink_to(policy_file)
    with pytest.raises(guard.PolicyError, match=re.escape(f"cannot open the access policy {link}: ")):
        guard.load_policy(str(link))


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "policy.fifo"
    os.mkfifo(fifo)
    outcome = []

    def load():
        try:
            guard.load_policy(str(fifo))
        except guard.PolicyError as exc:
            outcome.append(str(exc))

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(timeout=10)
    if worker.is_alive():  # unblock the open() so the thread can end
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("load_policy blocked on a FIFO")
    assert outcome == [f"the access policy {fifo} is not a regular file. Fix: re-run the vllm role"]


def test_a_directory_is_refused(tmp_path):
    with pytest.raises(guard.PolicyError, match="is not a regular file"):
        guard.load_policy(str(tmp_path))


def test_a_file_over_the_size_cap_is_refused(tmp_path):
    path = tmp_path / "access-policy.json"
    text = json.dumps(policy_data())
    write_policy(path, text + " " * (guard.MAX_POLICY_BYTES - len(text)))  # exactly the cap: read
    assert guard.load_policy(str(path)).user_of(ALICE_TOKEN) == "alice"
    write_policy(path, text + " " * (guard.MAX_POLICY_BYTES - len(text) + 1))
    with pytest.raises(guard.PolicyError, match=f"is {guard.MAX_POLICY_BYTES + 1} bytes, over"):
        guard.load_policy(str(path))


@pytest.mark.parametrize("content", [b'{"format": 1, "require_token": "\xff"}', b"", b"{'format': 1}",
                                     b"\xef\xbb\xbf{}"])
def test_a_file_that_is_not_utf8_json_is_refused(tmp_path, content):
    path = tmp_path / "access-policy.json"
    write_policy(path, content)
    with pytest.raises(guard.PolicyError, match="is not valid JSON"):
        guard.load_policy(str(path))


def test_the_guard_does_not_start_without_its_policy(monkeypatch, tmp_path, recording_inner_app):
    monkeypatch.delenv(guard.POLICY_ENV, raising=False)
    with pytest.raises(guard.PolicyError, match=f"{guard.POLICY_ENV} is not set"):
        guard.AccessGuard(recording_inner_app)
    monkeypatch.setenv(guard.POLICY_ENV, str(tmp_path / "absent.json"))
    with pytest.raises(guard.PolicyError, match=re.escape(f"access policy {tmp_path}/absent.json: No such file")):
        guard.AccessGuard(recording_inner_app)


def test_the_guard_reads_the_policy_named_by_the_environment(monkeypatch, policy_file, recording_inner_app):
    monkeypatch.setenv(guard.POLICY_ENV, str(policy_file))
    app = guard.AccessGuard(recording_inner_app)
    assert request(app, "GET", "/v1/models", bearer(ALICE_TOKEN)).status == 200


# --- requests ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    bearer(ALICE_TOKEN),
    [(b"authorization", f"bearer  {ALICE_TOKEN} ".encode())],
    [(b"x-api-key", BOB_TOKEN.encode()), *bearer(ALICE_TOKEN)],
])
def test_an_allowed_request_with_a_good_token_passes_and_is_logged_without_the_token(
        app, recording_inner_app, access_log, headers):
    recording_inner_app.status = 201
    response = request(app, "POST", "/v1/messages", headers)
    assert (response.status, response.body) == (201, b"from vllm")
    assert recording_inner_app.paths == ["/v1/messages"]
    assert access_log == ["claude-vllm-fleet access: user=alice POST /v1/messages 201"]


def test_each_user_is_logged_by_name(app, access_log):
    assert request(app, "GET", "/v1/models", bearer(BOB_TOKEN)).status == 200
    assert request(app, "HEAD", "/v1/models", bearer(ALICE_TOKEN)).status == 200
    assert access_log == ["claude-vllm-fleet access: user=bob GET /v1/models 200",
                          "claude-vllm-fleet access: user=alice HEAD /v1/models 200"]


@pytest.mark.parametrize(("headers", "reason"), [
    ([], "no token"),
    (bearer("sk-not-a-fleet-token"), "unknown token"),
    (bearer(ALICE_TOKEN + "x"), "unknown token"),
    # What Claude Code sends for ANTHROPIC_API_KEY: refused like vLLM's --api-key and the gateway do.
    ([(b"x-api-key", ALICE_TOKEN.encode())],
     "x-api-key instead of Authorization: Bearer (ANTHROPIC_API_KEY instead of ANTHROPIC_AUTH_TOKEN)"),
    ([*bearer(ALICE_TOKEN), *bearer(BOB_TOKEN)], "malformed or conflicting credentials"),
    ([(b"authorization", b"Basic " + ALICE_TOKEN.encode())], "malformed or conflicting credentials"),
    ([(b"authorization", ALICE_TOKEN.encode())], "malformed or conflicting credentials"),
    ([(b"authorization", b"Bearer ")], "malformed or conflicting credentials"),
    ([(b"x-api-key", b"")],
     "x-api-key instead of Authorization: Bearer (ANTHROPIC_API_KEY instead of ANTHROPIC_AUTH_TOKEN)"),
])
def test_a_missing_or_unknown_token_is_401(app, recording_inner_app, access_log, headers, reason):
    response = request(app, "POST", "/v1/messages", headers, client="10.1.2.3")
    assert response.status == 401
    assert response.headers[b"www-authenticate"] == b'Bearer realm="claude-vllm-fleet"'
    assert response.error() == ("authentication_error",
                                "invalid or missing token (send Authorization: Bearer <your token>)")
    assert recording_inner_app.scopes == []
    assert access_log == [f"claude-vllm-fleet access: refused 401 POST '/v1/messages' from 10.1.2.3: {reason}"]
    assert not any(token in line for line in access_log for token in (ALICE_TOKEN, BOB_TOKEN, "sk-not"))


def test_without_require_token_tokenless_requests_pass(tmp_path, recording_inner_app, access_log):
    path = tmp_path / "access-policy.json"
    write_policy(path, policy_data(require_token=False, tokens={digest(ALICE_TOKEN): "alice"}))
    app = guard.AccessGuard(recording_inner_app, policy_path=str(path))
    assert request(app, "POST", "/v1/messages").status == 200
    assert request(app, "POST", "/v1/messages", bearer(ALICE_TOKEN)).status == 200
    assert request(app, "POST", "/invocations").status == 404
    assert recording_inner_app.paths == ["/v1/messages", "/v1/messages"]
    assert [line for line in access_log if "user=" in line] == ["claude-vllm-fleet access: user=- POST /v1/messages 200",
                               "claude-vllm-fleet access: user=alice POST /v1/messages 200"]


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/invocations"),
    ("POST", "/tokenize"),
    ("POST", "/v1/chat/completions"),
    ("POST", "//v1/messages"),
    ("GET", "/v1/models/"),
    ("POST", "/v1/messages/../invocations"),
    ("POST", "/V1/messages"),
    ("GET", "/metrics/"),
    ("GET", ""),
])
def test_any_other_path_is_404_and_never_reaches_vllm(app, recording_inner_app, method, path):
    response = request(app, method, path, bearer(ALICE_TOKEN))
    assert response.status == 404
    assert response.error() == ("not_found_error", "this server answers only the paths Claude Code uses")
    assert recording_inner_app.scopes == []


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("GET", "/v1/messages", b"POST"),
    ("HEAD", "/v1/messages", b"POST"),
    ("DELETE", "/v1/models", b"GET, HEAD"),
    ("POST", "/health", b"GET, HEAD"),
    ("POST", "/metrics", b"GET, HEAD"),
])
def test_a_known_path_with_another_method_is_405_with_allow(app, recording_inner_app, method, path, allow):
    response = request(app, method, path, bearer(ALICE_TOKEN))
    assert response.status == 405
    assert response.headers[b"allow"] == allow
    assert response.error() == ("invalid_request_error", f"{method} is not allowed on {path}")
    assert recording_inner_app.scopes == []


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_health_is_open_without_a_token(app, recording_inner_app, method):
    assert request(app, method, "/health", client="203.0.113.9").status == 200
    assert recording_inner_app.paths == ["/health"]


@pytest.mark.parametrize("client", ["127.0.0.1", "127.3.2.1", "::1", "::ffff:127.0.0.1", "10.9.200.1",
                                    "::ffff:10.9.0.5", "192.0.2.7"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_metrics_are_served_to_loopback_and_the_listed_sources(app, recording_inner_app, client, method):
    assert request(app, method, "/metrics", client=client).status == 200
    assert recording_inner_app.paths == ["/metrics"]


@pytest.mark.parametrize("client", ["10.10.0.1", "192.0.2.8", "::2", "fe80::1", "::ffff:10.10.0.1", "", None,
                                    "not-an-address"])
def test_metrics_from_elsewhere_are_403_even_with_a_token(app, recording_inner_app, access_log, client):
    response = request(app, "GET", "/metrics", bearer(ALICE_TOKEN), client=client)
    assert response.status == 403
    assert response.error() == ("permission_error", "metrics are served to the monitoring hosts only")
    assert recording_inner_app.scopes == []
    assert access_log == [f"claude-vllm-fleet access: refused 403 GET '/metrics' from {client or ''}: "
                          "not a metrics source"]


def test_a_websocket_is_closed_without_reaching_vllm(app, recording_inner_app):
    scope = {"type": "websocket", "path": "/v1/messages", "headers": bearer(ALICE_TOKEN),
             "client": ("127.0.0.1", 5000)}
    sent = call(app, scope, incoming=[{"type": "websocket.connect"}])
    assert sent == [{"type": "websocket.close", "code": 1008}]
    assert recording_inner_app.scopes == []


def test_lifespan_passes_through(app, recording_inner_app):
    sent = call(app, {"type": "lifespan", "asgi": {"version": "3.0"}}, incoming=[{"type": "lifespan.startup"}])
    assert sent == [{"type": "lifespan.startup.complete"}]
    assert [scope["type"] for scope in recording_inner_app.scopes] == ["lifespan"]


def test_a_newline_in_a_path_cannot_forge_a_log_line(app, access_log):
    forged = "/v1/x\nclaude-vllm-fleet access: user=alice POST /v1/messages 200"
    assert request(app, "POST", forged, client="10.1.2.3").status == 404
    assert len(access_log) == 1 and "\n" not in access_log[0]
    assert access_log[0].startswith("claude-vllm-fleet access: refused 404 POST '/v1/x\\nclaude-vllm-fleet")


# --- live reload -----------------------------------------------------------------------------------------

def test_a_replaced_policy_revokes_a_token_at_the_next_request(app, policy_file, recording_inner_app):
    assert request(app, "POST", "/v1/messages", bearer(ALICE_TOKEN)).status == 200
    write_policy(policy_file, policy_data(tokens={digest(BOB_TOKEN): "bob"}))
    assert request(app, "POST", "/v1/messages", bearer(ALICE_TOKEN)).status == 401
    assert request(app, "POST", "/v1/messages", bearer(BOB_TOKEN)).status == 200
    write_policy(policy_file, policy_data(tokens={digest(BOB_TOKEN): "bob", digest("sk-carol"): "carol"}))
    assert request(app, "POST", "/v1/messages", bearer("sk-carol")).status == 200
    assert len(recording_inner_app.scopes) == 3


def test_a_replaced_file_of_the_same_size_and_mtime_is_reloaded(app, policy_file):
    """A rotated token (another digest, the same user, the same size) written within one clock tick."""
    before = policy_file.stat()
    write_policy(policy_file, policy_data(tokens={digest(ALICE_TOKEN + "2"): "alice", digest(BOB_TOKEN): "bob"}))
    os.utime(policy_file, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (policy_file.stat().st_size, policy_file.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert request(app, "POST", "/v1/messages", bearer(ALICE_TOKEN)).status == 401
    assert request(app, "POST", "/v1/messages", bearer(ALICE_TOKEN + "2")).status == 200


def assert_every_request_is_503(app):
    for method, path, headers in [("POST", "/v1/messages", bearer(ALICE_TOKEN)), ("GET", "/health", []),
                                  ("GET", "/metrics", []), ("POST", "/invocations", [])]:
        response = request(app, method, path, headers)
        assert response.status == 503, (method, path)
        assert response.error() == ("api_error", "the server's access policy cannot be read; ask the operator")


@pytest.mark.parametrize("broken", ["{", policy_data(format=2), policy_data(requests=5), "[" * 100_000])
def test_a_broken_policy_fails_closed_until_fixed(app, policy_file, recording_inner_app, access_log, broken):
    write_policy(policy_file, broken)
    assert_every_request_is_503(app)
    assert recording_inner_app.scopes == []
    assert len([line for line in access_log if "answering 503 until it is fixed" in line]) == 1
    write_policy(policy_file, policy_data())
    assert request(app, "POST", "/v1/messages", bearer(ALICE_TOKEN)).status == 200


def test_a_deleted_policy_fails_closed(app, policy_file, recording_inner_app):
    policy_file.unlink()
    assert_every_request_is_503(app)
    write_policy(policy_file, policy_data())
    assert request(app, "GET", "/v1/models", bearer(BOB_TOKEN)).status == 200
    assert recording_inner_app.paths == ["/v1/models"]


def test_a_symlink_moved_into_place_fails_closed(app, policy_file, tmp_path):
    elsewhere = tmp_path / "elsewhere.json"
    write_policy(elsewhere, policy_data(tokens={digest("sk-mallory"): "mallory"}))
    link = tmp_path / "link"
    link.symlink_to(elsewhere)
    os.replace(link, policy_file)
    assert request(app, "POST", "/v1/messages", bearer("sk-mallory")).status == 503
    assert request(app, "POST", "/v1/messages", bearer(ALICE_TOKEN)).status == 503
