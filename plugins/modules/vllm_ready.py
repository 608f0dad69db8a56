#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Wait until a vLLM server is ready and serves exactly the expected model id."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: vllm_ready
short_description: Wait until a vLLM server answers and serves exactly the expected model id
description:
  - Polls C(GET /health) until it answers 200, then C(GET /v1/models) until the served ids are
    exactly O(served_model_name).
  - When O(unit) is given, also waits until systemd counts the unit as C(active) (the role's units
    stay C(activating) until their own C(/health) probe has answered).
  - On timeout fails with what was served instead (or the last connection error) and the last
    lines of the systemd unit's journal, so a model that cannot load is diagnosed in one run.
  - Read-only; in check mode it checks once and does not wait.
version_added: "0.1.0"
options:
  url:
    description: Server root, e.g. C(http://127.0.0.1:8000).
    type: str
    required: true
  served_model_name:
    description: The only id C(/v1/models) must list.
    type: str
    required: true
  api_key:
    description: Token sent as C(Authorization Bearer) when the server enforces one.
    type: str
  unit:
    description: systemd unit that must be C(active), and whose journal is shown on failure.
    type: str
  timeout:
    description: Seconds to wait in total.
    type: int
    default: 1200
  interval:
    description: Seconds between attempts.
    type: float
    default: 2
  journal_lines:
    description: Journal lines to include in a failure.
    type: int
    default: 30
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
author:
  - claude-vllm-fleet contributors
"""

EXAMPLES = r"""
- name: Wait for the server
  vllm_ready:
    url: http://127.0.0.1:8000
    served_model_name: Qwen3.5-27B
    unit: vllm-main.service
"""

RETURN = r"""
served:
  description: Ids listed by C(/v1/models) at the end.
  returned: always
  type: list
  elements: str
max_model_len:
  description: The context length the server reports for the model.
  returned: when ready
  type: int
waited:
  description: Seconds spent waiting.
  returned: always
  type: float
"""

import json
import subprocess
import time
import urllib.error
import urllib.request

from ansible.module_utils.basic import AnsibleModule


def fetch(url, api_key=None, timeout=10):
    """GET url; return (status, body text). Raises OSError/URLError when there is no answer."""
    request = urllib.request.Request(url)
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def check_once(url, served_model_name, api_key):
    """Return (ready, problem, served ids, max_model_len)."""
    try:
        status, _body = fetch(f"{url}/health", timeout=5)
    except (OSError, urllib.error.URLError) as exc:
        return False, f"no answer from {url}/health ({getattr(exc, 'reason', exc)})", [], None
    if status != 200:
        return False, f"{url}/health answered {status}", [], None
    try:
        status, body = fetch(f"{url}/v1/models", api_key)
    except (OSError, urllib.error.URLError) as exc:
        return False, f"no answer from {url}/v1/models ({getattr(exc, 'reason', exc)})", [], None
    if status == 401:
        return False, f"{url}/v1/models answered 401: the server wants a different token (llm_api_token)", [], None
    if status != 200:
        return False, f"{url}/v1/models answered {status}: {body[:300]}", [], None
    try:
        models = json.loads(body).get("data", [])
    except ValueError:
        return False, f"{url}/v1/models did not answer JSON: {body[:300]}", [], None
    served = [entry.get("id") for entry in models]
    if served != [served_model_name]:
        return False, (f"the server serves {served} instead of exactly ['{served_model_name}']: "
                       f"--served-model-name does not match served_model_name"), served, None
    return True, "", served, models[0].get("max_model_len")


def unit_state(module, unit):
    """The unit's ActiveState, or None when there is no unit or no systemctl to ask."""
    systemctl = module.get_bin_path("systemctl") if unit else None
    if not systemctl:
        return None
    result = subprocess.run([systemctl, "show", "--property=ActiveState", "--value", unit],
                            capture_output=True, text=True, check=False)
    return result.stdout.strip() or "unknown"


def journal_tail(module, unit, lines):
    if not unit:
        return ""
    journalctl = module.get_bin_path("journalctl")
    if not journalctl:
        return ""
    result = subprocess.run([journalctl, "-u", unit, "-n", str(lines), "--no-pager", "-o", "cat"],
                            capture_output=True, text=True, check=False)
    return result.stdout


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", required=True),
            served_model_name=dict(type="str", required=True),
            api_key=dict(type="str", no_log=True),
            unit=dict(type="str"),
            timeout=dict(type="int", default=1200),
            interval=dict(type="float", default=2),
            journal_lines=dict(type="int", default=30),
        ),
        supports_check_mode=True,
    )
    params = module.params
    url = params["url"].rstrip("/")
    started = time.monotonic()
    deadline = started + params["timeout"]
    while True:
        ready, problem, served, max_model_len = check_once(url, params["served_model_name"], params["api_key"])
        state = unit_state(module, params["unit"])
        if ready and state not in (None, "active"):
            ready, problem = False, f"{params['unit']} is {state}, not active"
        waited = round(time.monotonic() - started, 1)
        if ready:
            module.exit_json(changed=False, served=served, max_model_len=max_model_len, waited=waited)
        if module.check_mode or time.monotonic() >= deadline:
            break
        time.sleep(params["interval"])
    journal = journal_tail(module, params["unit"], params["journal_lines"])
    module.fail_json(
        msg=(f"vLLM at {url} was not ready after {waited} s: {problem}."
             + (f" Last lines of {params['unit']}'s journal:\n{journal}" if journal else "")),
        served=served, waited=waited)


if __name__ == "__main__":
    main()
