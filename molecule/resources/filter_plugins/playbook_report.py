# -*- coding: utf-8 -*-
"""Summaries of an `ansible-playbook` run recorded with the ansible.posix.json callback (test helper)."""

from __future__ import annotations

DOCUMENTATION = r"""
name: playbook_report
short_description: Changed tasks, diffs and failures per host from ansible.posix.json output
description:
  - C(playbook_changed_tasks) returns {host -> [names of changed tasks]}.
  - C(playbook_results) returns {host -> [results of tasks whose name contains a string]}, loop items
    flattened, skipped ones left out.
  - C(playbook_failure_messages) returns {host -> [failure messages]}.
"""


def _task_results(report):
    for play in report.get("plays", []):
        for task in play.get("tasks", []):
            for host, result in task.get("hosts", {}).items():
                items = result.get("results") if isinstance(result.get("results"), list) else [result]
                yield task["task"]["name"], host, result, items


def playbook_changed_tasks(report):
    changed = {}
    for name, host, result, _items in _task_results(report):
        changed.setdefault(host, [])
        if result.get("changed"):
            changed[host].append(name)
    return changed


def playbook_results(report, name_part):
    found = {}
    for name, host, _result, items in _task_results(report):
        if name_part in name:
            found.setdefault(host, []).extend(item for item in items if not item.get("skipped"))
    return found


def playbook_failure_messages(report):
    failures = {}
    for _name, host, result, items in _task_results(report):
        for item in items:
            if item.get("failed") or result.get("failed"):
                msg = item.get("msg", result.get("msg", ""))
                failures.setdefault(host, []).append(msg if isinstance(msg, str) else "\n".join(map(str, msg)))
    return failures


class FilterModule:
    def filters(self):
        return {
            "playbook_changed_tasks": playbook_changed_tasks,
            "playbook_results": playbook_results,
            "playbook_failure_messages": playbook_failure_messages,
        }
