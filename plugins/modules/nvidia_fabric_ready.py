#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Wait until NVIDIA Fabric Manager has trained the NVLink fabric of an NVSwitch board (read-only)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: nvidia_fabric_ready
short_description: Wait until every GPU of an NVSwitch board reports its NVLink fabric as trained
description:
  - On NVSwitch boards (HGX/DGX H100, H200, B200) CUDA does not initialise until NVIDIA Fabric Manager
    has trained the NVLink fabric. This module polls C(nvidia-smi -q) until every GPU's C(Fabric)
    section reads C(State Completed) and C(Status Success), and the Fabric Manager service is active.
  - GPUs whose driver reports no fabric state (C(N/A) on PCIe cards and A100 boards) count as ready once the
    service is active.
  - Fails at once when a GPU's training completed with an error status or the service failed, and at
    the timeout otherwise; the failure names the GPUs and their state and carries the last lines of
    C(journalctl -u) of the service and of Fabric Manager's own log file.
  - Never changes anything (check mode safe).
options:
  timeout:
    description: Seconds to wait for the fabric.
    type: int
    default: 300
  interval:
    description: Seconds between two polls.
    type: int
    default: 5
  service:
    description: The Fabric Manager systemd unit.
    type: str
    default: nvidia-fabricmanager
  log_file:
    description: Fabric Manager's own log file (C(LOG_FILE_NAME) of its fabricmanager.cfg); its tail is returned on failure.
    type: path
    default: /var/log/fabricmanager.log
  log_lines:
    description: How many lines of the journal and of the log file a failure carries.
    type: int
    default: 20
  nvidia_smi_timeout:
    description: Seconds one nvidia-smi call may take.
    type: int
    default: 60
author: claude-vllm-fleet contributors
"""

EXAMPLES = r"""
- name: Wait for the NVLink fabric
  claude_vllm.fleet.nvidia_fabric_ready:
    timeout: 300
"""

RETURN = r"""
ready:
  description: Whether the fabric came up (always true when the module succeeds).
  type: bool
  returned: always
gpus:
  description: Each GPU of the last poll with C(bus_id), C(product), C(fabric_state), C(fabric_status) and C(verdict)
    (C(ready), C(waiting), C(failed) or C(not_reported)).
  type: list
  elements: dict
  returned: always
service_state:
  description: What C(systemctl is-active) said of the service at the last poll.
  type: str
  returned: always
waited:
  description: Seconds spent waiting.
  type: int
  returned: always
journal:
  description: The last lines of the service's journal (on failure only, else empty).
  type: list
  elements: str
  returned: always
log_tail:
  description: The last lines of Fabric Manager's log file (on failure only, else empty).
  type: list
  elements: str
  returned: always
"""

import time
from collections import deque

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.claude_vllm.fleet.plugins.module_utils.nvidia import fabric_verdict, parse_nvidia_smi_q


def poll(module, smi, prefix, service):
    """One look: (gpus with their verdict, service state, nvidia-smi error or '')."""
    rc, out, err = module.run_command(prefix + [smi, "-q"])
    gpus = [dict(gpu, verdict=fabric_verdict(gpu)) for gpu in (parse_nvidia_smi_q(out) if rc == 0 else [])]
    error = "" if rc == 0 and gpus else ((out + err).strip()[-500:] or f"nvidia-smi -q exited with {rc}")
    systemctl = module.get_bin_path("systemctl")
    state = module.run_command([systemctl, "is-active", service])[1].strip() if systemctl else "unknown"
    return gpus, state or "unknown", error


def assess(gpus, service_state, error):
    """(outcome, problem): outcome 'ready', 'wait' or 'fail'; problem says what is not ready yet."""
    if service_state == "failed":
        return "fail", "the service failed"
    failed = [gpu for gpu in gpus if gpu["verdict"] == "failed"]
    if failed:
        return "fail", "fabric training ended in error on " + describe(failed)
    if error:
        return "wait", f"nvidia-smi -q did not answer: {error}"
    waiting = [gpu for gpu in gpus if gpu["verdict"] == "waiting"]
    if waiting:
        return "wait", "fabric not trained yet on " + describe(waiting)
    if service_state != "active":
        return "wait", f"the service is {service_state}"
    return "ready", ""


def describe(gpus):
    return ", ".join(f"{gpu['bus_id']} (state {gpu['fabric_state'] or '-'}, status {gpu['fabric_status'] or '-'})"
                     for gpu in gpus)


def tail(module, service, log_file, lines):
    journal = []
    journalctl = module.get_bin_path("journalctl")
    if journalctl:
        rc, out, err = module.run_command([journalctl, "-u", service, "-n", str(lines), "--no-pager", "-o", "cat"])
        journal = (out if rc == 0 else out + err).strip().splitlines()
    log_tail = []
    try:
        with open(log_file, encoding="utf-8", errors="replace") as handle:
            log_tail = [line.rstrip("\n") for line in deque(handle, maxlen=lines)]
    except OSError:
        pass
    return journal, log_tail


def main():
    module = AnsibleModule(
        argument_spec=dict(
            timeout=dict(type="int", default=300),
            interval=dict(type="int", default=5),
            service=dict(type="str", default="nvidia-fabricmanager"),
            log_file=dict(type="path", default="/var/log/fabricmanager.log"),
            log_lines=dict(type="int", default=20),
            nvidia_smi_timeout=dict(type="int", default=60),
        ),
        supports_check_mode=True,
    )
    params = module.params
    smi = module.get_bin_path("nvidia-smi", opt_dirs=["/usr/bin", "/usr/local/bin", "/usr/sbin"])
    if not smi:
        module.fail_json(msg="nvidia-smi is not installed: the driver is missing, so the NVLink fabric cannot be "
                             "checked. Fix: install the driver (role nvidia_cuda) before Fabric Manager.",
                         ready=False, gpus=[], service_state="unknown", waited=0, journal=[], log_tail=[])
    prefix = ["timeout", str(params["nvidia_smi_timeout"])] if module.get_bin_path("timeout") else []
    started = time.monotonic()
    deadline = started + max(0, params["timeout"])
    while True:
        gpus, service_state, error = poll(module, smi, prefix, params["service"])
        outcome, problem = assess(gpus, service_state, error)
        if outcome != "wait" or time.monotonic() >= deadline:
            break
        time.sleep(max(1, params["interval"]))
    waited = int(time.monotonic() - started)
    result = dict(changed=False, gpus=gpus, service_state=service_state, waited=waited)
    if outcome == "ready":
        module.exit_json(ready=True, journal=[], log_tail=[], **result)
    journal, log_tail = tail(module, params["service"], params["log_file"], params["log_lines"])
    reason = problem if outcome == "fail" else f"after {waited}s {problem}"
    lines = "\n".join(journal[-params["log_lines"]:]) or "(the journal has no lines of this unit)"
    msg = (f"NVIDIA Fabric Manager did not bring up the NVLink fabric: {reason} (service {params['service']} "
           f"is {service_state}). CUDA does not initialise on NVSwitch boards until it does. "
           f"Last lines of journalctl -u {params['service']}:\n{lines}")
    if log_tail:
        msg += f"\nLast lines of {params['log_file']}:\n" + "\n".join(log_tail)
    msg += ("\nFix: the Fabric Manager package must be the exact version of the running driver (nvidia-smi's "
            "Driver Version); look at systemctl status and the log above, then restart the service or the host.")
    module.fail_json(msg=msg, ready=False, journal=journal, log_tail=log_tail, **result)


if __name__ == "__main__":
    main()
