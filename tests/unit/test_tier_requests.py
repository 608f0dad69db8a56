"""bench/tier_requests.py: the purpose classifier, the scripted tool calls and the recording server.

The request bodies are cut-down copies of what Claude Code 2.1.331 sent (recorded 2026-12-01): the same
system blocks (identity line first) and message shapes, the long texts shortened.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest

from conftest import load_plugin

tier = load_plugin("bench/tier_requests.py", "fleet_bench_tier_requests")

CLI = "You are Claude Code, Anthropic's official CLI for Claude."
SDK = "You are a Claude agent, built on Anthropic's Claude Agent SDK."
BILLING = "x-anthropic-billing-header: cc_version=2.1.331; cc_entrypoint=cli;"


def body(system: list[str], user, tools: int = 0, **extra) -> dict:
    return dict({"model": "tier-sonnet", "max_tokens": 32000, "stream": True,
                 "system": [{"type": "text", "text": text} for text in system],
                 "messages": [{"role": "user", "content": user}],
                 "tools": [{"name": f"T{n}", "input_schema": {}} for n in range(tools)]}, **extra)


MAIN = "\nYou are an agent working with the user toward their goals, using your own judgment along the way."
REMINDER = {"type": "text", "text": "<system-reminder>\nAttribution for git commits ...</system-reminder>"}


@pytest.mark.parametrize(("request_body", "purpose"), [
    (body([CLI, MAIN], [REMINDER, {"type": "text", "text": "Reply with one short sentence."}], tools=13),
     "main conversation"),
    (body([BILLING, SDK, MAIN], [REMINDER, {"type": "text", "text": "Reply."}], tools=12), "main conversation"),
    (body([CLI, "You are naming a coding session so the user can pick it out of a long list of sessions."],
          [{"type": "text", "text": "<session>\nReply.\n</session>"}]), "session title"),
    (body(["You are a security monitor for autonomous AI coding agents.\n\n## Context"],
          [{"type": "text", "text": "<transcript>\n"}], max_tokens=2112), "auto-mode classifier"),
    (body([SDK, "You are a file search specialist for Claude Code, Anthropic's official CLI for Claude."],
          "List the files.", tools=5), "subagent Explore"),
    (body([SDK, "You are an agent for Claude Code, Anthropic's official CLI for Claude."], "List.", tools=8),
     "subagent"),
    (body([SDK, MAIN], [{"type": "text", "text": "CRITICAL: Respond with TEXT ONLY. Do NOT call any tools. ... "
                                                 "Your task is to create a detailed summary of the conversation"}],
          tools=12), "compaction"),
    (body([SDK, "You are a poet."], "Write a haiku."), "unknown"),
])
def test_classify(request_body, purpose):
    assert tier.classify(request_body) == purpose


def test_identity_line_and_billing_header_are_skipped():
    assert tier.system_text(body([BILLING, CLI, "Second block."], "x")) == "Second block."
    # a lone identity line is all there is: kept
    assert tier.system_text(body([CLI], "x")) == CLI
    assert tier.system_text({"system": "plain string"}) == "plain string"


def test_last_user_text_skips_reminders():
    assert tier.last_user_text(body([CLI], [REMINDER, {"type": "text", "text": "typed"}])) == "typed"
    assert tier.last_user_text(body([CLI], "as a string")) == "as a string"
    assert tier.last_user_text({"messages": []}) == ""


def test_tier_of():
    assert [tier.tier_of(m) for m in ("tier-opus", "tier-sonnet", "tier-haiku", "Qwen3")] == \
        ["opus", "sonnet", "haiku", "other:Qwen3"]


def tool_result(n: int) -> dict:
    return {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t{n}", "content": "ok"}]}


def test_scripted_tool_calls_follow_the_marker_and_the_results():
    tools = [{"name": "Bash"}, {"name": "Agent"}]
    first = {"role": "user", "content": [{"type": "text", "text": tier.TOOLS_PROMPT}]}
    steps = [tier.scripted_tool_call({"tools": tools, "messages": [first] + [tool_result(n) for n in range(done)]})
             for done in range(4)]
    assert [step and step["name"] for step in steps] == ["Bash", "Agent", "Agent", None]
    assert steps[1]["input"]["subagent_type"] == "Explore" and "model" not in steps[1]["input"]
    assert steps[2]["input"]["model"] == "haiku"
    # no marker, or no tools (a title request quotes the prompt): the fixed text
    assert tier.scripted_tool_call({"tools": tools, "messages": [{"role": "user", "content": "hi"}]}) is None
    assert tier.scripted_tool_call({"tools": [], "messages": [first]}) is None


@pytest.fixture()
def server():
    recorder = tier.Recorder()
    thread = threading.Thread(target=recorder.serve_forever, daemon=True)
    thread.start()
    yield recorder
    recorder.shutdown()
    recorder.server_close()


def post(server, path: str, payload: dict):
    request = urllib.request.Request(server.base_url + path, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "x-app": "cli"})
    return urllib.request.urlopen(request, timeout=10)


def test_server_streams_the_event_sequence_and_records_the_request(server):
    payload = body([CLI, MAIN], [{"type": "text", "text": "Reply."}], tools=3, model="tier-haiku")
    with post(server, "/v1/messages?beta=true", payload) as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        text = response.read().decode()
    events = [line.split(": ", 1)[1] for line in text.splitlines() if line.startswith("event: ")]
    assert events == ["message_start", "content_block_start", "content_block_delta", "content_block_stop",
                      "message_delta", "message_stop"]
    data = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    assert data[2]["delta"] == {"type": "text_delta", "text": tier.REPLY}
    assert data[4]["delta"]["stop_reason"] == "end_turn"
    records, others = server.take()
    assert others == []
    [record] = records
    assert (record["path"], record["tier"], record["max_tokens"], record["tools"], record["stream"],
            record["purpose"], record["reply"], record["headers"]["x-app"]) == \
        ("/v1/messages", "haiku", 32000, 3, True, "main conversation", "text", "cli")


def test_server_answers_without_streaming_and_the_classifier_with_allow(server):
    payload = body(["You are a security monitor for autonomous AI coding agents."], "<transcript>",
                   stream=False, max_tokens=2112)
    with post(server, "/v1/messages", payload) as response:
        message = json.load(response)
    assert message["content"] == [{"type": "text", "text": "<block>no</block>"}]
    assert message["stop_reason"] == "end_turn"
    with post(server, "/v1/messages/count_tokens", {"model": "tier-opus", "messages": []}) as response:
        assert json.load(response)["input_tokens"] > 0
    records, _ = server.take()
    assert [(r["purpose"], r["tier"]) for r in records] == [("auto-mode classifier", "sonnet"),
                                                           ("count tokens", "opus")]


def test_server_streams_a_scripted_tool_call(server):
    payload = body([CLI, MAIN], [{"type": "text", "text": tier.TOOLS_PROMPT}], tools=0)
    payload["tools"] = [{"name": "Bash", "input_schema": {}}]
    with post(server, "/v1/messages", payload) as response:
        data = [json.loads(line[6:]) for line in response.read().decode().splitlines() if line.startswith("data: ")]
    assert data[1]["content_block"]["type"] == "tool_use" and data[1]["content_block"]["name"] == "Bash"
    assert json.loads(data[2]["delta"]["partial_json"]) == {"command": "ls",
                                                            "description": "List files in current directory"}
    assert data[4]["delta"]["stop_reason"] == "tool_use"


def test_server_answers_other_paths_404_and_notes_them(server):
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(server.base_url + "/v1/models", timeout=10)
    assert error.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as error:
        post(server, "/v1/complete", {})
    assert error.value.code == 404
    records, others = server.take()
    assert records == [] and others == ["GET /v1/models", "POST /v1/complete"]
