# -*- coding: utf-8 -*-
"""Filters of the monitoring role: Prometheus durations as seconds (the alert rules compare ages with them), and
the PromQL queries of the fleet's Grafana dashboard, ready for Prometheus' HTTP API (the Molecule verify asks
Prometheus for each and needs data for each)."""

from __future__ import annotations

import json
import re

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: monitoring
short_description: Prometheus durations in seconds; the queries of the fleet's Grafana dashboard
description:
  - C(prometheus_duration_seconds) takes a Prometheus duration (C(90s), C(15m), C(2d), C(1h30m)) and, as its
    argument, the name of the variable it comes from. It returns the number of seconds, for PromQL comparisons
    that take numbers, such as the age of the last smoke result. A value that is not a duration fails with a
    message naming the variable and the fix.
  - C(dashboard_queries) takes a Grafana dashboard (the parsed JSON or its text) and, as its argument, the rate
    window (default C(1m)). It returns one C(panel)/C(expr) pair per query of every panel (rows included), in
    the dashboard's order, with Grafana's C($__rate_interval) replaced by the rate window. Any other Grafana
    variable in a query fails, since Prometheus could not evaluate it.
"""

EXAMPLES = r"""
- name: The smoke result's maximum age in seconds
  ansible.builtin.debug:
    msg: "{{ '2d' | claude_vllm.fleet.prometheus_duration_seconds('monitoring_alert_smoke_max_age') }}"  # 172800

- name: Every query of the dashboard, for Prometheus' HTTP API
  ansible.builtin.debug:
    msg: "{{ lookup('ansible.builtin.file', 'fleet-dashboard.json') | claude_vllm.fleet.dashboard_queries('5m') }}"
"""

RETURN = r"""
_value:
  description: Seconds (prometheus_duration_seconds); a list of C({panel, expr}) (dashboard_queries).
  type: raw
"""

# Prometheus' duration syntax (model.ParseDuration): units in this order, each at most once.
UNITS = (("y", 365 * 86400), ("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1), ("ms", 0.001))
DURATION = re.compile("".join(rf"(?:(?P<{'ms_' if unit == 'ms' else unit}>[0-9]+){unit})?" for unit, _ in UNITS))
RATE_INTERVAL = re.compile(r"\$(?:__rate_interval\b|\{__rate_interval\})")
GRAFANA_VARIABLE = re.compile(r"\$(?:\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*)|\[\[[^\]]*\]\]")


def prometheus_duration_seconds(value, variable="duration"):
    """A Prometheus duration as seconds (an int when whole)."""
    text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    match = DURATION.fullmatch(text) if text else None
    if text == "0":
        return 0
    if not match or not any(match.groupdict().values()):
        raise AnsibleFilterError(
            f"{variable} ({value!r}) is not a Prometheus duration: the alert rules could not be written. "
            f"Fix: write a number and a unit, units from years to milliseconds in this order "
            f"(y, w, d, h, m, s, ms), e.g. 90s, 15m, 2d or 1h30m.")
    seconds = sum(int(match.group("ms_" if unit == "ms" else unit) or 0) * factor for unit, factor in UNITS)
    return int(seconds) if float(seconds).is_integer() else seconds


def _panels(panels):
    for panel in panels or []:
        yield panel
        yield from _panels(panel.get("panels"))  # a collapsed row holds its panels


def dashboard_queries(dashboard, rate_interval="1m"):
    """[{panel, expr}] of every query of the dashboard, with $__rate_interval replaced by `rate_interval`."""
    if isinstance(dashboard, (str, bytes)):
        try:
            dashboard = json.loads(dashboard)
        except ValueError as exc:
            raise AnsibleFilterError(f"dashboard_queries: the dashboard is not JSON ({exc}).") from exc
    if not isinstance(dashboard, dict):
        raise AnsibleFilterError(f"dashboard_queries: expected a Grafana dashboard (a JSON object), got "
                                 f"{type(dashboard).__name__}.")
    prometheus_duration_seconds(rate_interval, "dashboard_queries' rate_interval")
    queries = []
    for panel in _panels(dashboard.get("panels")):
        for target in panel.get("targets") or []:
            expr = target.get("expr")
            if not expr:
                continue
            expr = RATE_INTERVAL.sub(str(rate_interval), expr)
            other = GRAFANA_VARIABLE.findall(expr)
            if other:
                raise AnsibleFilterError(
                    f"dashboard_queries: panel {panel.get('title')!r} queries with the Grafana variable(s) "
                    f"{', '.join(other)}, which Prometheus cannot evaluate. Fix: use only $__rate_interval, "
                    f"as a rate window.")
            queries.append({"panel": panel.get("title", ""), "expr": expr})
    return queries


class FilterModule:
    def filters(self):
        return {
            "prometheus_duration_seconds": prometheus_duration_seconds,
            "dashboard_queries": dashboard_queries,
        }
