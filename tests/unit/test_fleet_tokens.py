"""Per-user tokens: derived from one secret, distinct, Bearer-safe, revocable by leaving the holder list."""

from __future__ import annotations

import hashlib
import re

from conftest import load_plugin

tokens = load_plugin("plugins/filter/fleet_tokens.py", "fleet_tokens_filters")
SECRET = "0123456789abcdef0123456789abcdef-vault"
BEARER = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 b64token


def test_a_token_is_stable_bearer_safe_and_differs_per_user_epoch_and_secret():
    alice = tokens.fleet_user_token(SECRET, "alice")
    assert alice == tokens.fleet_user_token(SECRET, "alice", 0)
    assert alice.startswith("cvf1.") and len(alice) == 5 + 43 and BEARER.fullmatch(alice)
    others = {tokens.fleet_user_token(SECRET, "bob"), tokens.fleet_user_token(SECRET, "alice", 1),
              tokens.fleet_user_token(SECRET + "x", "alice"), tokens.fleet_user_token(SECRET, "alic")}
    assert alice not in others and len(others) == 4
    assert SECRET not in alice


def test_holders_are_the_workstations_users_less_the_revoked():
    hostvars = {"ws1": {"claude_code_users": ["alice", {"name": "bob", "env": {}}]},
                "ws2": {"claude_code_users": ["carol", "alice"]},
                "ws3": {}}
    assert tokens.fleet_token_holders(hostvars, ["ws1", "ws2", "ws3"]) == ["alice", "bob", "carol"]
    assert tokens.fleet_token_holders(hostvars, ["ws1", "ws2"], ["bob", {"name": "carol"}]) == ["alice"]
    assert tokens.fleet_token_holders(hostvars, ["ws2"]) == ["alice", "carol"]


def test_digests_are_sha256_of_each_current_token_and_never_the_token():
    digests = tokens.fleet_token_digests(["bob", "alice", "alice"], SECRET, {"bob": 2})
    assert [d["user"] for d in digests] == ["alice", "bob"]
    bob = tokens.fleet_user_token(SECRET, "bob", 2)
    assert digests[1]["digest"] == hashlib.sha256(bob.encode()).hexdigest()
    assert bob not in repr(digests)


def test_secret_and_epoch_problems():
    assert tokens.user_token_secret_problem("") == ""
    assert tokens.user_token_secret_problem(SECRET) == ""
    short = tokens.user_token_secret_problem("short-secret")
    assert "llm_user_token_secret" in short and "short-secret" not in short and "openssl rand" in short
    assert tokens.user_token_epochs_problem({"alice": 1, "bob": "2"}) == ""
    assert "alice" in tokens.user_token_epochs_problem({"alice": -1})
    assert "mapping" in tokens.user_token_epochs_problem(["alice"])
