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
  - When O(unit) is given and the server exits while it is waited for more often than
    O(restarts_allowed) (systemd restarts it each time), or systemd gives up and marks it
    C(failed), fails at once with the server's own last lines before the exit, instead of waiting
    out O(timeout) for a server that cannot start. An exit within O(restarts_allowed) after which
    the server becomes ready is reported as a warning with the same lines.
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
    description:
      - systemd unit that must be C(active), and whose journal is shown on failure.
      - Its restart counter is watched; a server that exits while starting fails the wait at once.
    type: str
  restarts_allowed:
    description:
      - Exits (systemd restarts) of the server tolerated while waiting; one more fails the wait.
      - A server that cannot start (a bad flag, a model that does not fit) exits every time, so it
        fails after O(restarts_allowed) + 1 exits, typically within a minute or two.
    type: int
    default: 1
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
restarts:
  description: How many times the server exited (and systemd restarted it) while it was waited for.
  returned: when O(unit) is given
  type: int
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
    """(ActiveState, NRestarts) of the unit, or (None, None) when there is no unit or no systemctl."""
    systemctl = module.get_bin_path("systemctl") if unit else None
    if not systemctl:
        return None, None
    result = subprocess.run([systemctl, "show", "--property=ActiveState", "--property=NRestarts", unit],
                            capture_output=True, text=True, check=False)
    properties = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    restarts = properties.get("NRestarts", "")
    return properties.get("ActiveState") or "unknown", int(restarts) if restarts.isdigit() else None


# systemd's own line when a service's main process ends (journalctl -u UNIT -o cat).
MAIN_PROCESS_EXITED = "Main process exited"


def last_lines_before_exit(journal, lines):
    """The `lines` lines up to and including the last "Main process exited" line: the server's own
    error, not the start of the attempt systemd has made since. The whole tail when there is none."""
    entries = journal.splitlines()
    exits = [index for index, entry in enumerate(entries) if MAIN_PROCESS_EXITED in entry]
    end = exits[-1] + 1 if exits else len(entries)
    return "\n".join(entries[max(0, end - lines):end]) + "\n"


def journal_tail(module, unit, lines, exited=False):
    if not unit:
        return ""
    journalctl = module.get_bin_path("journalctl")
    if not journalctl:
        return ""
    result = subprocess.run([journalctl, "-u", unit, "-n", str(lines * 10 if exited else lines),
                             "--no-pager", "-o", "cat"],
                            capture_output=True, text=True, check=False)
    return last_lines_before_exit(result.stdout, lines) if exited and result.stdout else result.stdout


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", required=True),
            served_model_name=dict(type="str", required=True),
            api_key=dict(type="str", no_log=True),
            unit=dict(type="str"),
            restarts_allowed=dict(type="int", default=1),
            timeout=dict(type="int", default=1200),
            interval=dict(type="float", default=2),
            journal_lines=dict(type="int", default=30),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if params["restarts_allowed"] < 0:
        module.fail_json(msg=f"restarts_allowed ({params['restarts_allowed']}) must be 0 or more: 0 fails at the "
                             "first exit while starting, 1 tolerates one. Nothing was waited for.")
    url = params["url"].rstrip("/")
    unit = params["unit"]
    started = time.monotonic()
    deadline = started + params["timeout"]
    _state, first_restarts = unit_state(module, unit)
    exits = 0
    gave_up = False
    while True:
        ready, problem, served, max_model_len = check_once(url, params["served_model_name"], params["api_key"])
        state, restarts = unit_state(module, unit)
        if None not in (restarts, first_restarts):
            exits = restarts - first_restarts
        if ready and state not in (None, "active"):
            ready, problem = False, f"{unit} is {state}, not active"
        waited = round(time.monotonic() - started, 1)
        if ready:
            if exits:
                module.warn(f"{unit} exited {exits} time(s) while starting before it became ready (systemd "
                            f"restarted it). Its last lines before the exit:\n"
                            + journal_tail(module, unit, params["journal_lines"], exited=True))
            module.exit_json(changed=False, served=served, max_model_len=max_model_len, waited=waited,
                             **({"restarts": exits} if unit else {}))
        if state == "failed" or exits > params["restarts_allowed"]:
            gave_up = True
            problem = (f"{unit} exited while starting ("
                       + ("systemd gave up restarting it" if state == "failed"
                          else f"{exits} time(s) since the wait began, each time restarted by systemd")
                       + "); its own error is in the journal lines below, and the fix with it")
            break
        if module.check_mode or time.monotonic() >= deadline:
            break
        time.sleep(params["interval"])
    journal = journal_tail(module, unit, params["journal_lines"], exited=gave_up)
    what = f"stopped after {waited} s of waiting" if gave_up else f"was not ready after {waited} s"
    module.fail_json(
        msg=(f"vLLM at {url} {what}: {problem}."
             + (f" Last lines of {unit}'s journal:\n{journal}" if journal else "")),
        served=served, waited=waited, **({"restarts": exits} if unit else {}))


if __name__ == "__main__":
    main()
