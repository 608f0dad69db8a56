# -*- coding: utf-8 -*-
"""The fleet's contract values (plugins/module_utils/fleet_contract.py), by name, for roles and templates."""

from __future__ import annotations

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

from ansible_collections.claude_vllm.fleet.plugins.module_utils.fleet_contract import CONTRACT

DOCUMENTATION = r"""
name: fleet_contract
short_description: A value both sides of a role boundary must agree on, from its one home
description:
  - Returns the contract values written once in C(plugins/module_utils/fleet_contract.py), so that the vllm
    and gateway roles (backend name, runtime socket), the claude_code and vllm roles (Claude Code's prompt
    reserve), the smoke run and the monitoring role (the smoke result's metric names) and the modules read the
    same value.
  - An unknown name fails with the list of known ones.
options:
  _terms:
    description: Names of contract values (C(gateway_backend), C(gateway_admin_socket), C(default_instance),
      C(prompt_token_reserve), C(claude_code_default_max_output_tokens), C(model_aliases), C(served_name_max_length),
      C(smoke_success_metric), C(smoke_timestamp_metric)).
    required: true
    type: list
    elements: str
"""

EXAMPLES = r"""
- name: Show the backend the vllm role drains its servers in
  ansible.builtin.debug:
    msg: "{{ lookup('claude_vllm.fleet.fleet_contract', 'gateway_backend') }}"
"""

RETURN = r"""
_raw:
  description: The values, in the order of the names.
  type: list
"""


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        unknown = [term for term in terms if term not in CONTRACT]
        if unknown:
            raise AnsibleLookupError(f"fleet_contract has no value {', '.join(map(repr, unknown))}. "
                                     f"Known: {', '.join(sorted(CONTRACT))}.")
        return [CONTRACT[term] for term in terms]
