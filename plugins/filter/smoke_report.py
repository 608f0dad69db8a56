"""Filters that turn the claude_code_smoke results of every host into one readable report.

smoke_table(hostvars, hosts, fact)
    A list of text lines: a table (host, user, base URL, served name, each step's result and latency), then
    each failure with its diagnosis, the hosts not tested because a check-mode run found the tools not
    installed yet, then the hosts that gave no result (unreachable, or failed earlier in the
    run): the hosts that need attention.
smoke_needs_attention(hostvars, hosts, fact)
    The names of the hosts with a failed user or no result at all (not those a check-mode run found
    not installed yet).
smoke_metrics(result, workstation, timestamp)
    One workstation's result as node-exporter textfile metrics (Prometheus text format): per user, 1 or 0
    and the Unix time of the run, under the fleet contract's metric names.
"""

from __future__ import annotations

from ansible_collections.claude_vllm.fleet.plugins.module_utils.fleet_contract import (
    SMOKE_SUCCESS_METRIC,
    SMOKE_TIMESTAMP_METRIC,
)

DOCUMENTATION = r"""
name: smoke_report
short_description: One readable report of every host's claude_code_smoke result
description:
  - C(smoke_table(hostvars, hosts, fact)) returns text lines; a table per host and user, then each
    failure with its diagnosis, the hosts not tested yet, and the hosts that gave no result.
  - C(smoke_needs_attention(hostvars, hosts, fact)) returns the names of the hosts with a failed user
    or no result at all.
  - C(smoke_metrics(result, workstation, timestamp)) returns one workstation's result as node-exporter textfile
    metrics (per user 1 or 0, and the time of the run), which the monitoring role's alerts and dashboard read.
"""

STEPS = (("settings", "settings"), ("models", "GET /v1/models"), ("messages", "POST /v1/messages"),
         ("tools", "tool call"), ("claude", "claude -p"))


def _result(hostvars, host, fact):
    try:
        values = hostvars[host]
    except KeyError:
        return None
    try:
        value = values.get(fact) if hasattr(values, "get") else None
    except Exception:  # an undefined or broken variable of that host: treat as no result
        return None
    if isinstance(value, dict) and isinstance(value.get("users"), list):
        return value
    return None


def _cell(step):
    status = step.get("status", "?")
    latency = step.get("latency_ms")
    if latency is None or status == "skip":
        return status
    if latency >= 10000:
        return f"{status} {latency / 1000:.0f}s"
    if latency >= 1000:
        return f"{status} {latency / 1000:.1f}s"
    return f"{status} {latency}ms"


def smoke_table(hostvars, hosts, fact="claude_code_smoke_result"):
    header = ["HOST", "USER", "BASE URL", "SERVED NAME"] + [title for _key, title in STEPS] + ["RESULT"]
    rows = []
    failures = []
    missing = []
    pending = []
    for host in hosts or []:
        result = _result(hostvars, host, fact)
        if result is None:
            missing.append(host)
            continue
        if result.get("not_installed"):
            pending.append(f"{host}: not tested: {', '.join(result['not_installed'])} not installed yet "
                           "(check mode; the run would install them).")
            continue
        for user in result["users"]:
            steps = user.get("steps", {})
            rows.append([host, str(user.get("user")), str(user.get("base_url") or "-"),
                         str(user.get("served_model_name") or "-")]
                        + [_cell(steps.get(key, {})) for key, _title in STEPS]
                        + ["PASS" if user.get("ok") else "FAIL"])
            if not user.get("ok"):
                for line in user.get("diagnosis") or ["failed without a diagnosis (see the task output)"]:
                    failures.append(f"{host} / {user.get('user')}: {line}")
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header] + rows]
    passed = sum(1 for r in rows if r[-1] == "PASS")
    tested = len(hosts or []) - len(missing) - len(pending)
    lines.append(f"{passed} of {len(rows)} user(s) passed on {tested} host(s).")
    lines.extend(pending)
    if failures:
        lines.append("Failures (cause, symptom, fix):")
        lines.extend(failures)
    for host in missing:
        lines.append(f"{host}: no smoke result: unreachable, or it failed earlier in this run "
                     "(see the play recap). Needs attention.")
    return lines


def smoke_needs_attention(hostvars, hosts, fact="claude_code_smoke_result"):
    attention = []
    for host in hosts or []:
        result = _result(hostvars, host, fact)
        if result is None or not all(u.get("ok") for u in result["users"]):
            attention.append(host)
    return attention


def _label(value):
    """A Prometheus label value: backslash, double quote and newline escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def smoke_metrics(result, workstation, timestamp):
    users = (result or {}).get("users") or []
    lines = [f"# HELP {SMOKE_SUCCESS_METRIC} 1 when the user's last smoke test (doctor and claude -p) passed, else 0.",
             f"# TYPE {SMOKE_SUCCESS_METRIC} gauge"]
    lines += [f'{SMOKE_SUCCESS_METRIC}{{workstation="{_label(workstation)}",user="{_label(user.get("user", ""))}"}} '
              f'{1 if user.get("ok") else 0}' for user in users]
    lines += [f"# HELP {SMOKE_TIMESTAMP_METRIC} Unix time of the user's last smoke test.",
              f"# TYPE {SMOKE_TIMESTAMP_METRIC} gauge"]
    lines += [f'{SMOKE_TIMESTAMP_METRIC}{{workstation="{_label(workstation)}",user="{_label(user.get("user", ""))}"}} '
              f'{int(float(timestamp))}' for user in users]
    return "\n".join(lines) + "\n"


class FilterModule:
    def filters(self):
        return {"smoke_table": smoke_table, "smoke_needs_attention": smoke_needs_attention,
                "smoke_metrics": smoke_metrics}
