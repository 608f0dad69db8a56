"""The tiny scripted model answers any prompt with its fixed sentence then EOS, even sampled at T=1.

torch and transformers are not part of the test tool chain's venv: these tests run the builder and
plain transformers in a subprocess, with this interpreter when it has them, otherwise with the
model-builder venv that `tools/fleet.py setup --for-tests` creates; with neither they skip.

Each build or generation is a process of its own that mostly runs on one core (importing torch and
transformers alone takes seconds), so the module starts the independent ones together (a second
forced build with the first, the other-reply rebuild with the generation) and each test waits for
the one it checks. The four temperature-1 draws per conversation are one batched generate call
(num_return_sequences) instead of four: the same number of independent samples, in fewer steps.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import REPO, load_plugin

CACHE = load_plugin("tools/test_assets.py", "fleet_test_assets").default_cache_dir()
MODEL_VENV_PYTHON = CACHE / "model-venv" / "bin" / "python"
BUILDER = REPO / "tests" / "fixtures" / "tiny_model" / "build_tiny_model.py"
NEEDED = ("torch", "transformers", "tokenizers", "safetensors")


def model_python() -> str | None:
    if all(importlib.util.find_spec(name) for name in NEEDED):
        return sys.executable
    if MODEL_VENV_PYTHON.exists():
        return str(MODEL_VENV_PYTHON)
    return None


PYTHON = model_python()
pytestmark = pytest.mark.skipif(
    PYTHON is None, reason="torch/transformers missing: run python3 tools/fleet.py setup --for-tests")

# Conversations as vLLM hands them to the chat template: plain strings, content as a list of parts,
# tools, an assistant tool call and its result, inline system reminders (Claude Code's shapes).
TOOLS = [{"type": "function", "function": {
    "name": "Bash", "description": "Run a shell command",
    "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}}]
CONVERSATIONS = [
    {"messages": [{"role": "user", "content": "test"}]},
    {"messages": [{"role": "system", "content": "You are terse."},
                  {"role": "user", "content": "Write a haiku about GPUs."}]},
    {"messages": [{"role": "user", "content": "def f(x):\n    return x\n" * 300}]},
    {"messages": [{"role": "user", "content": "Hello"}]},  # the reply's own first word
    {"tools": TOOLS, "messages": [
        {"role": "system", "content": [{"type": "text", "text": "You are Claude Code."},
                                       {"type": "text", "text": " Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": "List the files."}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "Bash", "arguments": "{\"command\": \"ls\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "README.md\nsite.yml"}]},
        {"role": "system", "content": "<system-reminder>inline reminder</system-reminder>"},
        {"role": "user", "content": [{"type": "text", "text": "Thanks. "}, {"type": "text", "text": "Now what?"}]},
    ]},
]

GENERATE = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
model_dir, conversations, seeds = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
samples = int(sys.argv[4])
tokenizer = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
results = []
for conversation in conversations:
    text = tokenizer.apply_chat_template(conversation["messages"], tools=conversation.get("tools"),
                                         add_generation_prompt=True, tokenize=False)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    runs = []
    for seed in seeds:  # None: greedy; a number: `samples` draws at temperature 1 over the whole vocabulary
        kwargs = {"do_sample": False} if seed is None else {"do_sample": True, "temperature": 1.0,
                                                            "top_k": 0, "top_p": 1.0, "num_return_sequences": samples}
        if seed is not None:
            torch.manual_seed(seed)
        out = model.generate(ids, max_new_tokens=40, pad_token_id=tokenizer.pad_token_id, **kwargs)
        runs.extend(row[ids.shape[1]:].tolist() for row in out)  # a draw that stops early is padded: a mismatch
    results.append({"prompt": text, "prompt_tokens": ids.shape[1], "runs": runs})
print(json.dumps({"eos": tokenizer.eos_token_id, "results": results,
                  "decoded": [tokenizer.decode(run) for item in results for run in item["runs"]]}))
"""


def run_builder(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, str(BUILDER), *args], capture_output=True, text=True, check=check, timeout=900)


def generate(model_dir: Path, conversations: list[dict], seeds: list[int | None], samples: int = 1) -> dict:
    """Each conversation greedy (seed None) and `samples` independent draws per seed, in one batch each."""
    result = subprocess.run([PYTHON, "-c", GENERATE, str(model_dir), json.dumps(conversations), json.dumps(seeds),
                             str(samples)], capture_output=True, text=True, check=True, timeout=900)
    return json.loads(result.stdout.strip().splitlines()[-1])


def fixture(model_dir: Path) -> dict:
    return json.loads((model_dir / "fixture.json").read_text())


def rebuild_with_other_reply(model_dir: Path, out: Path, reply: str) -> dict:
    """Copy the model to out, rebuild it there in place with another reply, and generate with the result."""
    shutil.copytree(model_dir, out)
    first = fixture(out)["content_sha256"]
    run_builder(str(out), "--reply", reply)
    return {"first": first, "record": fixture(out), "output": generate(out, CONVERSATIONS[:2], [None, 7])}


@pytest.fixture(scope="module")
def background():
    """Runs the module's independent slow steps side by side; waits for (and ends with) the module."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield pool


@pytest.fixture(scope="module")
def steps(tmp_path_factory, background) -> dict:
    """The first build (through the command line), then the steps that only need it, already under way."""
    again = tmp_path_factory.mktemp("again") / "again"
    forced = background.submit(run_builder, str(again), "--force")  # overlaps the first build
    out = tmp_path_factory.mktemp("tiny") / "model"
    printed = run_builder(str(out)).stdout.strip().splitlines()[-1]
    assert Path(printed) == out
    other = tmp_path_factory.mktemp("other")
    return {
        "model_dir": out, "again": again, "forced": forced, "other_dir": other,
        # every conversation, greedy and four draws at temperature 1
        "generated": background.submit(generate, out, CONVERSATIONS, [None, 0], 4),
        "other_reply": background.submit(rebuild_with_other_reply, out, other / "model", OTHER_REPLY),
        "tool_call": background.submit(build_tool_call_model, tmp_path_factory.mktemp("tools") / "model"),
    }


@pytest.fixture(scope="module")
def model_dir(steps) -> Path:
    return steps["model_dir"]


@pytest.fixture(scope="module")
def generated(steps) -> dict:
    """Every conversation, greedy and four draws at temperature 1 (five runs each)."""
    generated = steps["generated"].result()
    assert all(len(item["runs"]) == 5 for item in generated["results"])
    return generated


def test_any_prompt_gets_the_fixed_reply_then_eos_greedy_and_sampled(model_dir, generated):
    record = fixture(model_dir)
    expected = record["reply_token_ids"] + [record["eos_token_id"]]
    output = generated
    assert output["eos"] == record["eos_token_id"]
    for item in output["results"]:
        for run in item["runs"]:
            assert run == expected, item["prompt"][-300:]
    assert set(output["decoded"]) == {record["reply"] + "<|im_end|>"}
    assert record["reply"] == "Hello from the tiny scripted model."
    assert record["min_logit_margin"] >= 30


def test_chat_template_renders_tools_parts_and_inline_system(generated):
    prompt = generated["results"][-1]["prompt"]
    assert prompt.startswith("<|im_start|>system\nYou are Claude Code. Be brief.\n\n# Tools\n")
    assert '"name": "Bash"' in prompt and "</tools>" in prompt
    assert "<|im_start|>user\nList the files.<|im_end|>\n" in prompt
    assert '<tool_call>\n{"name": "Bash", "arguments": {"command": "ls"}}\n</tool_call><|im_end|>' in prompt
    assert "<|im_start|>user\n<tool_response>\nREADME.md\nsite.yml\n</tool_response><|im_end|>" in prompt
    assert "<|im_start|>system\n<system-reminder>inline reminder</system-reminder><|im_end|>" in prompt
    assert prompt.endswith("<|im_start|>user\nThanks. Now what?<|im_end|>\n<|im_start|>assistant\n")


def test_second_build_is_cached(model_dir):
    before = {path.name: path.stat().st_mtime_ns for path in model_dir.iterdir()}
    result = run_builder(str(model_dir))
    assert result.stdout.strip() == str(model_dir)
    assert {path.name: path.stat().st_mtime_ns for path in model_dir.iterdir()} == before
    # importable too, and a cache hit does not even import torch
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import build_tiny_model as b; "
             "print(b.build(sys.argv[2]), 'torch' in sys.modules)")
    result = subprocess.run([PYTHON, "-c", probe, str(BUILDER.parent), str(model_dir)],
                            capture_output=True, text=True, check=True)
    assert result.stdout.split() == [str(model_dir), "False"]


def test_build_is_deterministic(steps):
    steps["forced"].result()  # a second build, in another process, from scratch (--force)
    assert fixture(steps["again"])["content_sha256"] == fixture(steps["model_dir"])["content_sha256"]


OTHER_REPLY = "Scripted answer, nothing else."


def test_other_reply_rebuilds_in_place(steps):
    rebuilt = steps["other_reply"].result()
    record = rebuilt["record"]
    assert record["reply"] == OTHER_REPLY and record["content_sha256"] != rebuilt["first"]
    assert not [path.name for path in steps["other_dir"].iterdir() if path.name != "model"]  # no staging left over
    assert set(rebuilt["output"]["decoded"]) == {OTHER_REPLY + "<|im_end|>"}


def test_reply_with_repeated_tokens_is_refused(tmp_path):
    result = run_builder(str(tmp_path / "m"), "--reply", "the the the", check=False)
    assert result.returncode == 2 and "repeated ids" in result.stderr
    assert not (tmp_path / "m").exists()


def test_a_foreign_directory_is_never_replaced(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    result = run_builder(str(tmp_path), check=False)
    assert result.returncode == 2 and "not a tiny-model directory" in result.stderr
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]


# The tool-call fixture: every answer is this call in the Hermes format (what the e2e scenario serves with
# vLLM's hermes parser, and with a wrong one).
TOOL_CALL = {"name": "Bash", "arguments": {"command": "echo \"tool ran\" > proof.txt"}}


def build_tool_call_model(out: Path) -> dict:
    run_builder(str(out), "--tool-call", json.dumps(TOOL_CALL))
    return {"model_dir": out, "output": generate(out, CONVERSATIONS, [None, 3], 2)}


def test_tool_call_model_answers_every_prompt_with_the_hermes_call(steps):
    built = steps["tool_call"].result()
    record = fixture(built["model_dir"])
    expected_text = '<tool_call>\n{"name": "Bash", "arguments": {"command": "echo \\"tool ran\\" > proof.txt"}}\n</tool_call>'
    assert record["reply"] == expected_text and record["tool_call"] == TOOL_CALL
    assert len(record["reply_token_ids"]) == 3  # the tags and the JSON line as one added token
    assert record["min_logit_margin"] >= 30
    expected = record["reply_token_ids"] + [record["eos_token_id"]]
    for item in built["output"]["results"]:
        assert all(run == expected for run in item["runs"]), item["prompt"][-300:]
    assert set(built["output"]["decoded"]) == {expected_text + "<|im_end|>"}
    # what vLLM's hermes parser does with it (its regex, then json.loads of the inside)
    inside = re.findall(r"<tool_call>(.*?)</tool_call>", expected_text, re.DOTALL)
    assert [json.loads(text) for text in inside] == [TOOL_CALL]


def test_tool_call_model_keeps_the_sentence_models_cache(model_dir):
    """The option is off by default: the sentence model's recorded parameters have no tool_call key."""
    assert "tool_call" not in fixture(model_dir)["parameters"]


@pytest.mark.parametrize("call, message", [
    ("not json", "--tool-call is not JSON"),
    ('{"name": "Bash"}', "must be an object with exactly"),
    ('{"name": "", "arguments": {}}', "must be an object with exactly"),
    ('{"name": "Bash", "arguments": "echo"}', "must be an object with exactly"),
])
def test_a_malformed_tool_call_is_refused_before_building(tmp_path, call, message):
    result = run_builder(str(tmp_path / "m"), "--tool-call", call, check=False)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "m").exists()
