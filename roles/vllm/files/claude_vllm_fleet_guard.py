# -*- coding: utf-8 -*-
# Installed by the claude-vllm-fleet vllm role; changes here are overwritten.
"""Access guard for a vLLM server: an ASGI middleware loaded with `--middleware claude_vllm_fleet_guard.AccessGuard`.

vLLM's own --api-key guards /v1, /v2, /inference and /cohere only: /invocations runs the same inference
unauthenticated, and /metrics, /tokenize, /pooling ... answer anyone. This guard sits in front of every
route of the server and lets through only what the fleet's policy file allows:

- the requests Claude Code makes (a method + path list), each with a token the policy accepts
  (`Authorization: Bearer <token>`, what Claude Code sends for ANTHROPIC_AUTH_TOKEN; an `x-api-key`
  header, what it sends for ANTHROPIC_API_KEY, is not accepted, as with vLLM's own --api-key and the
  gateway, so the field notes' symptom stays the same everywhere), compared by SHA-256 digest: the file
  holds no token;
- /health to anyone who can connect (readiness probes and gateway health checks send no token);
- /metrics only to the listed source addresses (loopback always);
- nothing else: 404 for an unknown path, 405 for a known path with another method, 401 for a missing
  or unknown token, 403 for /metrics from elsewhere; websockets are closed.

The policy is re-read when its file changes (inode, size or mtime), checked on every request, so a
revoked token is refused from the next request on and the server never restarts for it. A policy
that cannot be read or is invalid fails closed: at start vLLM does not start (the error names the
file), later every request is answered 503 until the file is fixed.

Each request that was let through is logged with the user its token belongs to (never the token) and
the status, on stderr (the journal): `claude-vllm-fleet access: user=alice POST /v1/messages 200`.

`python3 claude_vllm_fleet_guard.py --check FILE` validates a policy file (the role's `validate:`).
Standard library only: it runs in vLLM's interpreter and in the system's.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import stat
import sys
import threading

POLICY_ENV = "CLAUDE_VLLM_FLEET_ACCESS_POLICY"
POLICY_FORMAT = 1
MAX_POLICY_BYTES = 4 * 1024 * 1024
ALWAYS_OPEN = (("GET", "/health"),)
METRICS_PATH = "/metrics"
LOOPBACK = ("127.0.0.0/8", "::1/128")
DIGEST_LENGTH = 64
MAX_USER_LENGTH = 128

log = logging.getLogger("claude_vllm_fleet.access")
if not log.handlers:
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("claude-vllm-fleet access: %(message)s"))
    log.addHandler(_handler)
    log.setLevel(logging.INFO)
    log.propagate = False


class PolicyError(ValueError):
    """The policy file is missing, unreadable or invalid; the message names the file and the fix."""


class Policy:
    """What one policy file allows. Built only from a file that passed every check."""

    def __init__(self, data, source="<policy>"):
        if not isinstance(data, dict):
            raise PolicyError(f"{source}: the policy must be a JSON object")
        unknown = sorted(set(data) - {"format", "require_token", "requests", "tokens", "metrics_sources"})
        if unknown:
            raise PolicyError(f"{source}: unknown keys {', '.join(unknown)}")
        if type(data.get("format")) is not int or data["format"] != POLICY_FORMAT:  # true == 1 in Python
            raise PolicyError(f"{source}: format must be {POLICY_FORMAT}, got {data.get('format')!r}")
        require_token = data.get("require_token")
        if not isinstance(require_token, bool):
            raise PolicyError(f"{source}: require_token must be true or false")
        self.require_token = require_token

        self.routes = {}
        requests = data.get("requests") or []
        if not isinstance(requests, list):
            raise PolicyError(f"{source}: requests must be a list of {{method, path}}")
        for entry in requests:
            if not isinstance(entry, dict) or set(entry) != {"method", "path"}:
                raise PolicyError(f"{source}: each of requests must be {{method, path}}, got {entry!r}")
            method, path = entry["method"], entry["path"]
            if not (isinstance(method, str) and method.isalpha() and method.isupper()):
                raise PolicyError(f"{source}: request method {method!r} is not an upper-case HTTP method")
            if not (isinstance(path, str) and path.startswith("/") and path.isprintable() and " " not in path
                    and "?" not in path and "#" not in path):
                raise PolicyError(f"{source}: request path {path!r} must start with / and hold no space, ? or #")
            if path == METRICS_PATH:
                raise PolicyError(f"{source}: {METRICS_PATH} is allowed by metrics_sources, not by requests")
            self.routes.setdefault(path, set()).add(method)
        for method, path in ALWAYS_OPEN:
            self.routes.setdefault(path, set()).add(method)
        for methods in self.routes.values():
            if "GET" in methods:
                methods.add("HEAD")

        tokens = data.get("tokens") or {}
        if not isinstance(tokens, dict):
            raise PolicyError(f"{source}: tokens must map SHA-256 digests to user names")
        for digest, user in tokens.items():
            if not (isinstance(digest, str) and len(digest) == DIGEST_LENGTH
                    and all(c in "0123456789abcdef" for c in digest)):
                raise PolicyError(f"{source}: token digest {digest[:12]!r}... is not 64 lower-case hex digits")
            if not (isinstance(user, str) and user and len(user) <= MAX_USER_LENGTH and user.isprintable()
                    and " " not in user):
                raise PolicyError(f"{source}: the user of a token must be a printable name without spaces")
        if require_token and not tokens:
            raise PolicyError(f"{source}: require_token is true but no token is accepted (every request would get 401)")
        self.tokens = dict(tokens)

        metrics_sources = data.get("metrics_sources") or []
        if not isinstance(metrics_sources, list):
            raise PolicyError(f"{source}: metrics_sources must be a list of IP addresses or networks")
        self.metrics_sources = []
        for entry in list(LOOPBACK) + metrics_sources:
            try:
                self.metrics_sources.append(ipaddress.ip_network(str(entry), strict=False))
            except ValueError:
                raise PolicyError(f"{source}: metrics source {entry!r} is not an IP address or network") from None

    def user_of(self, token):
        """The user a token belongs to, or None."""
        if not token:
            return None
        return self.tokens.get(hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest())

    def may_scrape(self, client_host):
        try:
            address = ipaddress.ip_address(client_host)
        except (TypeError, ValueError):
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in network for network in self.metrics_sources)


def load_policy(path):
    """Read and check the policy at `path` (no links followed, regular file, bounded size)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise PolicyError(f"cannot open the access policy {path}: {exc.strerror}. Fix: re-run the vllm role "
                          f"(it writes this file), or check its owner and mode (0640 root:vllm)") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PolicyError(f"the access policy {path} is not a regular file. Fix: re-run the vllm role")
        if info.st_size > MAX_POLICY_BYTES:
            raise PolicyError(f"the access policy {path} is {info.st_size} bytes, over {MAX_POLICY_BYTES}")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            raw = handle.read(MAX_POLICY_BYTES + 1)
    finally:
        os.close(fd)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        raise PolicyError(f"the access policy {path} is not valid JSON ({exc}). Fix: re-run the vllm role") from None
    return Policy(data, source=path)


def _stamp(path):
    try:
        info = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def _credential(headers):
    """The token a request carries in Authorization: Bearer <t>: (token, problem). token is '' when there is
    none; problem names a malformed or conflicting header, or an x-api-key header sent instead."""
    found, api_key = set(), False
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return None, "malformed or conflicting credentials"
            found.add(token.strip())
        elif name == b"x-api-key":
            api_key = True
    if len(found) > 1:
        return None, "malformed or conflicting credentials"
    if not found and api_key:
        return "", "x-api-key instead of Authorization: Bearer (ANTHROPIC_API_KEY instead of ANTHROPIC_AUTH_TOKEN)"
    return (found.pop() if found else ""), ""


class AccessGuard:
    """ASGI middleware: every HTTP request passes the fleet's access policy or is answered here."""

    def __init__(self, app, policy_path=None):
        self.app = app
        self.policy_path = policy_path or os.environ.get(POLICY_ENV, "")
        if not self.policy_path:
            raise PolicyError(f"{POLICY_ENV} is not set: the guard does not know its policy file. "
                              f"Fix: re-run the vllm role (the unit sets it)")
        self._lock = threading.Lock()
        self._stamp = _stamp(self.policy_path)
        self._policy = load_policy(self.policy_path)  # raises: vLLM does not start without a policy
        self._broken = None
        self._open_paths = {path for _method, path in ALWAYS_OPEN}
        log.info("policy %s loaded: %d token(s), token %s", self.policy_path, len(self._policy.tokens),
                 "required" if self._policy.require_token else "not required")

    def current_policy(self):
        """The policy in force, re-read if its file changed; None while the file is broken (fail closed)."""
        stamp = _stamp(self.policy_path)
        if stamp == self._stamp:
            return None if self._broken else self._policy
        with self._lock:
            if stamp != self._stamp:
                try:
                    policy = load_policy(self.policy_path)
                except PolicyError as exc:
                    self._broken = str(exc)
                    log.error("%s; answering 503 until it is fixed", exc)
                else:
                    self._policy, self._broken = policy, None
                    log.info("policy %s reloaded: %d token(s)", self.policy_path, len(policy.tokens))
                self._stamp = stamp
        return None if self._broken else self._policy

    async def __call__(self, scope, receive, send):
        kind = scope.get("type")
        if kind == "lifespan":
            await self.app(scope, receive, send)
            return
        if kind == "websocket":
            await receive()
            await send({"type": "websocket.close", "code": 1008})
            return
        if kind != "http":
            return

        policy = self.current_policy()
        method, path = scope.get("method", ""), scope.get("path", "")
        client = (scope.get("client") or ("", 0))[0]
        if policy is None:
            await _answer(send, 503, "api_error", "the server's access policy cannot be read; ask the operator")
            return

        if path == METRICS_PATH:
            if method not in ("GET", "HEAD"):
                await _answer(send, 405, "invalid_request_error", f"{method} is not allowed on {path}",
                              extra=[(b"allow", b"GET, HEAD")])
            elif policy.may_scrape(client):
                await self.app(scope, receive, send)
            else:
                log.warning("refused 403 %s %r from %s: not a metrics source", method, path, client)
                await _answer(send, 403, "permission_error", "metrics are served to the monitoring hosts only")
            return

        methods = policy.routes.get(path)
        if methods is None:
            log.warning("refused 404 %s %r from %s: not an allowed path", method, path, client)
            await _answer(send, 404, "not_found_error", "this server answers only the paths Claude Code uses")
            return
        if method not in methods:
            await _answer(send, 405, "invalid_request_error", f"{method} is not allowed on {path}",
                          extra=[(b"allow", ", ".join(sorted(methods)).encode())])
            return

        user = "-"
        if path not in self._open_paths:
            token, problem = _credential(scope.get("headers") or [])
            found = None if problem else policy.user_of(token)
            if found:
                user = found
            elif policy.require_token:
                reason = problem or ("unknown token" if token else "no token")
                log.warning("refused 401 %s %r from %s: %s", method, path, client, reason)
                await _answer(send, 401, "authentication_error",
                              "invalid or missing token (send Authorization: Bearer <your token>)",
                              extra=[(b"www-authenticate", b'Bearer realm="claude-vllm-fleet"')])
                return

        status = []

        async def send_and_note(message):
            if message.get("type") == "http.response.start":
                status.append(message.get("status"))
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            if path not in self._open_paths:
                log.info("user=%s %s %s %s", user, method, path, status[0] if status else "-")


async def _answer(send, status, error_type, message, extra=()):
    body = json.dumps({"type": "error", "error": {"type": error_type, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + list(extra)})
    await send({"type": "http.response.body", "body": body})


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2 or argv[0] != "--check":
        print("usage: claude_vllm_fleet_guard.py --check POLICY_FILE", file=sys.stderr)
        return 2
    try:
        policy = load_policy(argv[1])
    except PolicyError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{argv[1]}: valid; {len(policy.tokens)} token(s), {len(policy.routes)} path(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
