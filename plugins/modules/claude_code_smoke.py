#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Smoke test of Claude Code against the fleet's vLLM server, for each user of a workstation."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: claude_code_smoke
short_description: Prove that each user's Claude Code reaches the served model
description:
  - For each user, runs C(claude-vllm-doctor --json) as that user, so the user's own settings are read
    (C(~/.claude/settings.json) and the managed policy file), not the inventory's idea of them. The doctor asks
    the server C(GET /v1/models) (the served name listed exactly) and C(POST /v1/messages) (Anthropic format,
    with the user's C(ANTHROPIC_AUTH_TOKEN)), and names every broken setting with its symptom and fix.
  - The doctor also asks the model to call a tool (tool_choice auto, as Claude Code sends tools) and checks that
    the answer holds a parsed C(tool_use) block. A C(--tool-call-parser) that does not match the model answers
    200 with the call as plain text, and Claude Code silently stops using tools. The C(tools) step fails then,
    naming the parser to set (C(vllm_tool_call_parser)), and warns when the model answered without calling the
    tool.
  - When the doctor finds no error, runs the real C(claude -p PROMPT) as the user with a time limit and
    expects exit status 0 and a non-empty reply.
  - Never changes anything it manages and never fails by itself; the caller decides from C(ok).
    In check mode only the doctor runs (C(claude -p) writes session files under the user's home).
    In check mode on a machine the role has not installed yet (no doctor or CLI), nothing is tested;
    the result says which tools the run would install (RV(not_installed)) and RV(ok) stays true.
options:
  users:
    description: Account names to test. Each must exist on the host.
    type: list
    elements: str
    required: true
  doctor:
    description: Path of the installed C(claude-vllm-doctor).
    type: path
    default: /usr/local/bin/claude-vllm-doctor
  claude:
    description: Path of the C(claude) executable.
    type: path
    default: /usr/local/bin/claude
  prompt:
    description: Prompt sent by the doctor and by C(claude -p).
    type: str
    default: Reply with one short sentence.
  timeout:
    description: Seconds C(claude -p) may take before it counts as failed.
    type: int
    default: 300
  doctor_timeout:
    description: Seconds each of the doctor's HTTP requests may take.
    type: int
    default: 30
  settings_max_bytes:
    description: The doctor refuses settings files larger than this before reading them.
    type: int
    default: 1048576
  expect_reply:
    description: When set, the reply of C(claude -p) must contain this text.
    type: str
    default: ""
  run_claude:
    description: Run C(claude -p) after a clean doctor report. Set to false to test only the HTTP path.
    type: bool
    default: true
author:
  - claude-vllm-fleet
"""

EXAMPLES = r"""
- name: Smoke-test alice's and bob's Claude Code
  claude_code_smoke:
    users: [alice, bob]
    expect_reply: Hello
  register: smoke

- name: Fail with the diagnosis
  ansible.builtin.fail:
    msg: "{{ smoke.users | rejectattr('ok') | map(attribute='diagnosis') | flatten }}"
  when: not smoke.ok
"""

RETURN = r"""
ok:
  description: Every user passed every step.
  returned: always
  type: bool
not_installed:
  description: In check mode, the tools that are not installed yet (the run would install them); nothing was tested.
  returned: always
  type: list
  elements: str
users:
  description: One entry per user (empty when RV(not_installed) is not).
  returned: always
  type: list
  elements: dict
  contains:
    user: {description: Account name., type: str}
    ok: {description: This user passed every step., type: bool}
    base_url: {description: ANTHROPIC_BASE_URL as the user's settings have it (credentials removed)., type: str}
    served_model_name: {description: The model the user's sonnet tier asks for., type: str}
    steps:
      description: >-
        settings, models (GET /v1/models), messages (POST /v1/messages), tools (POST /v1/messages with a tool:
        the server parsed the model's tool call) and claude (claude -p), each a dict with status (ok, FAIL,
        warn or skip), latency_ms (or null) and detail.
      type: dict
    diagnosis:
      description: The doctor's errors (problem, symptom, fix), then the failure of claude -p if any.
      type: list
      elements: str
    doctor:
      description: The doctor's JSON report (claude-vllm-doctor/1), secrets masked.
      type: dict
"""

import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule

# Lines the CLI prints on stderr that say nothing about the failure (2.1.331 with a custom model id).
HARMLESS_STDERR = ("[claude-code:unrecognized_model]",)
SETTINGS_CHECKS = ("settings.", "model.", "tiers.", "base_url.", "traffic.", "auth.", "custom_option.",
                   "override.", "output_budget.", "env.")


def user_command(account, argv):
    """argv run as the user with a clean login-like environment (nothing of root's leaks in)."""
    env = ["HOME=" + account.pw_dir, "USER=" + account.pw_name, "LOGNAME=" + account.pw_name,
           "SHELL=" + (account.pw_shell or "/bin/sh"), "LANG=C.UTF-8",
           "PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin"]
    return ["runuser", "-u", account.pw_name, "--", "env", "-i"] + env + list(argv)


def step(status, latency_ms=None, detail=""):
    return {"status": status, "latency_ms": latency_ms, "detail": detail}


def finding_line(finding):
    where = finding.get("source") or ""
    text = "{} [{}]: {}".format(finding.get("key"), where, finding.get("problem")) if where else \
        "{}: {}".format(finding.get("key"), finding.get("problem"))
    if finding.get("symptom"):
        text += " Symptom: " + finding["symptom"]
    if finding.get("fix"):
        text += " Fix: " + finding["fix"]
    return text


def server_step(report, check_id, timing_key):
    """The status of one HTTP step from the doctor's findings for it (check_id: one id or a tuple of ids)."""
    timings = (report.get("server") or {}).get("timings_ms") or {}
    latency = timings.get(timing_key)
    ids = (check_id,) if isinstance(check_id, str) else tuple(check_id)
    own = [f for f in report.get("findings", []) if f.get("id") in ids]
    # A network error on an earlier request (server.health) means this step never ran.
    if not own:
        blocking = [f for f in report.get("findings", [])
                    if f.get("id", "").startswith("server.") and f.get("severity") == "error"]
        if blocking:
            return step("FAIL", latency, blocking[0].get("problem", ""))
        if not (report.get("server") or {}).get("checked"):
            return step("skip", None, "server not checked (no usable ANTHROPIC_BASE_URL)")
        return step("skip", latency, "not reached")
    rank = {"error": 0, "warning": 1, "info": 2, "ok": 3}
    worst = own[0]
    for finding in own:
        if rank.get(finding.get("severity"), 3) < rank.get(worst.get("severity"), 3):
            worst = finding
    status = {"ok": "ok", "info": "ok", "warning": "warn", "error": "FAIL"}[worst["severity"]]
    return step(status, latency, worst.get("problem", ""))


def settings_step(report):
    errors = [f for f in report.get("findings", [])
              if f.get("severity") == "error" and f.get("id", "").startswith(SETTINGS_CHECKS)
              and f.get("source_kind") != "server"]
    warnings = [f for f in report.get("findings", [])
                if f.get("severity") == "warning" and f.get("id", "").startswith(SETTINGS_CHECKS)]
    if errors:
        return step("FAIL", None, "; ".join(f["id"] for f in errors))
    if warnings:
        return step("warn", None, "; ".join(f["id"] for f in warnings))
    return step("ok", None, "")


def clean_stderr(text):
    lines = [line for line in (text or "").splitlines() if not line.strip().startswith(HARMLESS_STDERR)]
    return "\n".join(lines).strip()


def stop_process_tree(leader):
    """Kill a timed-out command: its process group and every process of its session.

    Called before the leader is reaped, so its pid (the group and session id) cannot have been
    reused by an unrelated process.
    """
    try:
        os.killpg(leader, signal.SIGKILL)
    except OSError:
        pass
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/{}/stat".format(entry)) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 4 and fields[3] == str(leader):  # session id: children that left the group
            try:
                os.kill(int(entry), signal.SIGKILL)
            except OSError:
                pass


def run_as(account, argv, timeout, workdir=None):
    """Run argv as the user in a session of its own; on timeout kill all of it and return None for rc.

    Returns (rc or None, stdout, stderr, elapsed_ms). Nothing the command started is left behind.
    """
    if workdir is not None:
        argv = ["sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", workdir] + list(argv)
    started = time.time()
    proc = subprocess.Popen(user_command(account, argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, universal_newlines=True, errors="replace",
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        stop_process_tree(proc.pid)
        out, err = proc.communicate()
        rc = None
    return rc, out or "", err or "", int(round((time.time() - started) * 1000))


def doctor_wall_timeout(module):
    """How long the whole doctor may run: a few HTTP requests of doctor_timeout each, plus start-up."""
    return module.params["doctor_timeout"] * 8 + 30


def run_doctor(module, account):
    # --no-project: claude -p runs in an empty directory, so no project settings apply to it either.
    argv = [module.params["doctor"], "--json", "--no-project", "--timeout", str(module.params["doctor_timeout"]),
            "--max-settings-bytes", str(module.params["settings_max_bytes"]), "--prompt", module.params["prompt"]]
    limit = doctor_wall_timeout(module)
    rc, out, err, elapsed = run_as(account, argv, limit)
    if rc is None:
        return None, ("claude-vllm-doctor did not finish within {} s as {} and was stopped (with everything it "
                      "started). Symptom: the user's settings or the server make it wait (a file that never "
                      "ends, a server that accepts but never answers). Fix: run `claude-vllm-doctor` as {} to see "
                      "where it waits.").format(limit, account.pw_name, account.pw_name), elapsed
    try:
        report = json.loads(out)
    except ValueError:
        report = None
    if not isinstance(report, dict):
        return None, "claude-vllm-doctor did not print its JSON report (rc={}): {}".format(
            rc, (err or out)[-500:].strip()), elapsed
    return report, "", elapsed


def run_claude(module, account):
    workdir = tempfile.mkdtemp(prefix="claude-smoke-")
    try:
        os.chown(workdir, account.pw_uid, account.pw_gid)
        argv = [module.params["claude"], "-p", module.params["prompt"], "--output-format", "text"]
        rc, out, err, elapsed = run_as(account, argv, module.params["timeout"], workdir=workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if rc is None:
        return step("FAIL", elapsed, "claude -p gave no answer within {} s and was stopped (the CLI retries a "
                    "server that does not answer; see the doctor's findings). Output so far: {!r}".format(
                        module.params["timeout"], out[-300:])), "", None
    reply = out.strip()
    stderr = clean_stderr(err)
    if rc != 0:
        return step("FAIL", elapsed, "claude -p exited {}: {}".format(
            rc, (reply + " " + stderr).strip()[-600:] or "no output")), reply, rc
    if not reply:
        return step("FAIL", elapsed, "claude -p exited 0 with an empty reply" +
                    (": " + stderr[-300:] if stderr else "")), reply, 0
    expected = module.params["expect_reply"]
    if expected and expected not in reply:
        return step("FAIL", elapsed, "claude -p replied {!r}, which lacks the expected {!r}".format(
            reply[:200], expected)), reply, 0
    return step("ok", elapsed, reply[:200]), reply, 0


def test_user(module, name):
    result = {"user": name, "ok": False, "base_url": None, "served_model_name": None, "diagnosis": [],
              "doctor": None, "reply": None,
              "steps": {"settings": step("skip"), "models": step("skip"), "messages": step("skip"),
                        "tools": step("skip"), "claude": step("skip")}}
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        result["steps"]["settings"] = step("FAIL", None, "no such user")
        result["diagnosis"].append("User {!r} does not exist on this host. Fix: create it, or remove it from "
                                   "claude_code_users.".format(name))
        return result
    report, problem, _elapsed = run_doctor(module, account)
    if report is None:
        result["steps"]["settings"] = step("FAIL", None, problem)
        result["diagnosis"].append(problem)
        return result
    result["doctor"] = report
    effective = report.get("effective") or {}
    result["base_url"] = effective.get("base_url")
    result["served_model_name"] = effective.get("served_model_name")
    steps = result["steps"]
    steps["settings"] = settings_step(report)
    steps["models"] = server_step(report, "server.models", "models")
    steps["messages"] = server_step(report, "server.messages", "messages")
    steps["tools"] = server_step(report, ("server.tools", "server.tool_call"), "tools")
    result["diagnosis"] = [finding_line(f) for f in report.get("findings", []) if f.get("severity") == "error"]
    if report.get("ok") is not True:
        steps["claude"] = step("skip", None, "not run: the doctor found errors (fix them first)")
        return result
    if module.check_mode:
        steps["claude"] = step("skip", None, "not run in check mode")
        result["ok"] = True
        return result
    if not module.params["run_claude"]:
        steps["claude"] = step("skip", None, "run_claude is false")
        result["ok"] = True
        return result
    steps["claude"], result["reply"], _rc = run_claude(module, account)
    if steps["claude"]["status"] != "ok":
        result["diagnosis"].append(steps["claude"]["detail"] + " The doctor found nothing wrong with the "
                                   "settings or the server, so look at the CLI itself (its version, "
                                   "`claude -p --debug`).")
        return result
    result["ok"] = True
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            users=dict(type="list", elements="str", required=True),
            doctor=dict(type="path", default="/usr/local/bin/claude-vllm-doctor"),
            claude=dict(type="path", default="/usr/local/bin/claude"),
            prompt=dict(type="str", default="Reply with one short sentence."),
            timeout=dict(type="int", default=300),
            doctor_timeout=dict(type="int", default=30),
            settings_max_bytes=dict(type="int", default=1048576),
            expect_reply=dict(type="str", default=""),
            run_claude=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    if os.geteuid() != 0:
        module.fail_json(msg="claude_code_smoke runs each test as its user: it needs root (become: true).")
    missing = [key for key in ("doctor",) + (("claude",) if module.params["run_claude"] else ())
               if not os.access(module.params[key], os.X_OK)]
    if missing and module.check_mode:
        module.exit_json(changed=False, ok=True, users=[], not_installed=[module.params[key] for key in missing],
                         msg="Not installed yet (the run would install it): nothing to test in check mode.")
    for key in missing:
        module.fail_json(msg="{} ({}) is not an executable file. Fix: run the claude_code role first "
                             "(it installs both), or set the module's {} option.".format(key, module.params[key], key))
    if not module.params["users"]:
        module.fail_json(msg="users is empty: there is nobody to test. Fix: set claude_code_users.")
    results = [test_user(module, name) for name in module.params["users"]]
    module.exit_json(changed=False, ok=all(r["ok"] for r in results), users=results, not_installed=[])


if __name__ == "__main__":
    main()
