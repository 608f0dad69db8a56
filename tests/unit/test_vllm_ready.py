"""vllm_ready: what it asks the server over real HTTP, and which journal lines it shows after a crash.

The systemd side (a server that exits while starting fails the wait at once) runs for real in
molecule/vllm (operator_checks.yml, "a typo in vllm_extra_args").
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO, VllmStandIn, load_plugin, serve

ready = load_plugin("plugins/modules/vllm_ready.py", "vllm_ready_module")


class FakeVllmServer(VllmStandIn):
    """The stand-in vLLM; a test changes what it serves and the token it wants (reset after each test)."""


@pytest.fixture()
def server():
    httpd = serve(FakeVllmServer)
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    FakeVllmServer.served, FakeVllmServer.token = ["Qwen3.5-27B"], None


def test_ready_when_exactly_the_served_name_is_listed(server):
    _httpd, url = server
    assert ready.check_once(url, "Qwen3.5-27B", None) == (True, "", ["Qwen3.5-27B"], 32768)


def test_another_name_is_named_with_the_cause(server):
    _httpd, url = server
    FakeVllmServer.served = ["Qwen/Qwen3.5-27B"]
    ok, problem, served, _ = ready.check_once(url, "Qwen3.5-27B", None)
    assert not ok and served == ["Qwen/Qwen3.5-27B"]
    assert "--served-model-name does not match served_model_name" in problem


def test_a_wrong_token_is_named(server):
    _httpd, url = server
    FakeVllmServer.token = "right"
    assert ready.check_once(url, "Qwen3.5-27B", "right")[0]
    ok, problem, _, _ = ready.check_once(url, "Qwen3.5-27B", "wrong")
    assert not ok and "401" in problem and "llm_api_token" in problem


def test_no_server_is_a_connection_problem():
    ok, problem, served, _ = ready.check_once("http://127.0.0.1:9", "Qwen3.5-27B", None)
    assert not ok and served == [] and "no answer from http://127.0.0.1:9/health" in problem


# `journalctl -u vllm-main.service -o cat` after a typo in vllm_extra_args: systemd has already
# started the next attempt, whose first lines would hide the error in a plain tail.
CRASH_JOURNAL = """\
Starting vllm-main.service - vLLM serving Qwen3.5-27B on port 8000 (instance main)...
usage: api_server.py [-h] [--host HOST] [--port PORT]
api_server.py: error: unrecognized arguments: --no-such-flag
vllm-main.service: Main process exited, code=exited, status=2/INVALIDARGUMENT
vLLM exited before http://127.0.0.1:8000/health answered
vllm-main.service: Control process exited, code=exited, status=1/FAILURE
vllm-main.service: Failed with result 'exit-code'.
vllm-main.service: Scheduled restart job, restart counter is at 1.
Starting vllm-main.service - vLLM serving Qwen3.5-27B on port 8000 (instance main)...
INFO 11-25 10:01:02 [__init__.py:216] Automatically detected platform cpu.
"""


def test_after_a_crash_the_lines_end_at_the_exit():
    excerpt = ready.last_lines_before_exit(CRASH_JOURNAL, 3)
    assert excerpt.splitlines() == [
        "usage: api_server.py [-h] [--host HOST] [--port PORT]",
        "api_server.py: error: unrecognized arguments: --no-such-flag",
        "vllm-main.service: Main process exited, code=exited, status=2/INVALIDARGUMENT",
    ]


def test_without_an_exit_the_tail_is_kept():
    journal = "one\ntwo\nthree\n"
    assert ready.last_lines_before_exit(journal, 2) == "two\nthree\n"


def test_a_negative_restarts_allowed_is_refused_before_any_wait(tmp_path):
    """Run as Ansible runs it (the real AnsibleModule reading its arguments file)."""
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {
        "url": "http://127.0.0.1:9", "served_model_name": "m", "restarts_allowed": -1, "timeout": 600}}))
    result = subprocess.run([sys.executable, str(REPO / "plugins/modules/vllm_ready.py"), str(args)],
                            stdout=subprocess.PIPE, universal_newlines=True, timeout=60)
    answer = json.loads(result.stdout)
    assert answer.get("failed") is True
    assert "restarts_allowed (-1) must be 0 or more" in answer["msg"]
