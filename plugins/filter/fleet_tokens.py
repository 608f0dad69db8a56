# -*- coding: utf-8 -*-
"""Per-user tokens: each developer gets their own Bearer token, derived, revocable, never stored per user.

A user's token is HMAC-SHA256(llm_user_token_secret, "claude-vllm-fleet/user-token/v1" NUL user NUL
epoch), base64url without padding, prefixed "cvf1.": only the one vault secret is kept, a token can
be recomputed by the fleet for any user, and a token reveals nothing about the secret or another
user's token. Raising a user's epoch (llm_user_token_epochs) rotates that user's token alone;
changing the secret rotates everyone's.

The gateways and servers never hold the tokens themselves: they compare SHA-256 digests of what a
client sends with the digests of the current users' tokens (fleet_token_digests).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

DOCUMENTATION = r"""
name: fleet_tokens
short_description: Per-user Bearer tokens derived from one vault secret, and who currently holds one
description:
  - C(fleet_user_token(secret, user, epoch=0)) the token of one user.
  - C(fleet_token_holders(hostvars, workstation_hosts, revoked)) the users listed in the workstations'
    C(claude_code_users), less the revoked ones, sorted.
  - C(fleet_token_digests(users, secret, epochs)) a list of {user, digest} (SHA-256 hex of each token).
  - C(fleet_token_digest(token)) the SHA-256 hex of one token (what servers and gateways keep of it).
  - C(user_token_secret_problem(secret)) an error message, or an empty string for a usable secret.
"""

TOKEN_PREFIX = "cvf1."
DERIVATION_LABEL = b"claude-vllm-fleet/user-token/v1"
MIN_SECRET_LENGTH = 32


def fleet_user_token(secret, user, epoch=0):
    """The Bearer token of `user`: prefix + 43 base64url characters (256 bits), RFC 6750 safe."""
    message = b"\0".join([DERIVATION_LABEL, str(user).encode("utf-8"), str(int(epoch)).encode("ascii")])
    digest = hmac.new(str(secret).encode("utf-8"), message, hashlib.sha256).digest()
    return TOKEN_PREFIX + base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def token_digest(token):
    """What gateways and servers keep of a token: its SHA-256, lower-case hex."""
    return hashlib.sha256(str(token).encode("utf-8")).hexdigest()


def _user_names(users):
    names = []
    for item in users if isinstance(users, (list, tuple)) else [users]:
        name = item.get("name") if isinstance(item, dict) else item
        if isinstance(name, str) and name:
            names.append(name)
    return names


def fleet_token_holders(hostvars, workstation_hosts, revoked=None):
    """Users listed in claude_code_users of any workstation (as the inventory sets it), less `revoked`."""
    revoked = set(_user_names(revoked or []))
    holders = set()
    for host in workstation_hosts or []:
        holders.update(_user_names((hostvars.get(host) or {}).get("claude_code_users", [])))
    return sorted(holders - revoked)


def fleet_token_digests(users, secret, epochs=None):
    """[{user, digest}] of each user's current token, sorted by user."""
    epochs = epochs or {}
    return [{"user": user, "digest": token_digest(fleet_user_token(secret, user, epochs.get(user, 0)))}
            for user in sorted(set(_user_names(users)))]


def user_token_secret_problem(secret, variable="llm_user_token_secret"):
    """Empty string for a usable secret (or none: per-user tokens off); else one message."""
    if secret is None or secret == "":
        return ""
    if not isinstance(secret, str):
        return f"{variable} must be a string (keep it in ansible-vault). Fix: openssl rand -hex 32"
    if len(secret) < MIN_SECRET_LENGTH:
        return (f"{variable} is {len(secret)} characters long (the value is not shown); every user's token is "
                f"derived from it, so a short one can be guessed offline from any one token. Fix: at least "
                f"{MIN_SECRET_LENGTH} random characters, e.g. the output of 'openssl rand -hex 32', in ansible-vault.")
    return ""


def user_token_epochs_problem(epochs, variable="llm_user_token_epochs"):
    if epochs in (None, ""):
        return ""
    if not isinstance(epochs, dict):
        return f"{variable} must map user names to whole numbers, e.g. {{alice: 1}}. Fix: write it as a mapping."
    bad = sorted(str(user) for user, epoch in epochs.items()
                 if isinstance(epoch, bool) or not str(epoch).isdigit())
    if bad:
        return (f"{variable}: the epochs of {', '.join(bad)} are not whole numbers >= 0. Fix: raise a user's epoch "
                f"by one (0 -> 1) to rotate that user's token.")
    return ""


class FilterModule:
    def filters(self):
        return {
            "fleet_user_token": fleet_user_token,
            "fleet_token_holders": fleet_token_holders,
            "fleet_token_digests": fleet_token_digests,
            "fleet_token_digest": token_digest,
            "user_token_secret_problem": user_token_secret_problem,
            "user_token_epochs_problem": user_token_epochs_problem,
        }
