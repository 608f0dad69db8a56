"""The tiny scripted model answers any prompt with its fixed sentence then EOS, even sampled at T=1.

Runs in the model-builder venv that `tools/fleet.py setup --for-tests` creates (torch and
transformers live there, not in the test tool chain's venv).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

CACHE = Path(os.environ.get("FLEET_CACHE_DIR", Path.home() / ".cache" / "claude-vllm-fleet"))
MODEL_PYTHON = CACHE / "model-venv" / "bin" / "python"
BUILDER = REPO / "tests" / "fixtures" / "tiny_model" / "build_tiny_model.py"

GENERATE = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
model_dir = sys.argv[1]
tokenizer = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir)
replies = []
for prompt in ["test", "Write a haiku about GPUs.", "def f(x):\n    return x" * 200]:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    for seed in range(3):
        torch.manual_seed(seed)
        out = model.generate(ids, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=40)
        replies.append(tokenizer.decode(out[0][ids.shape[1]:], skip_special_tokens=False))
print(json.dumps(replies))
"""

pytestmark = pytest.mark.skipif(not MODEL_PYTHON.exists(),
                                reason="model-builder venv missing: run python3 tools/fleet.py setup --for-tests")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-model")
    subprocess.run([str(MODEL_PYTHON), str(BUILDER), str(out)], check=True, capture_output=True)
    return out


def test_any_prompt_gets_the_fixed_reply_then_eos_when_sampled(model_dir):
    reply = json.loads((model_dir / "fixture.json").read_text())["parameters"]["reply"]
    result = subprocess.run([str(MODEL_PYTHON), "-c", GENERATE, str(model_dir)], check=True,
                            capture_output=True, text=True)
    replies = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(replies) == 9
    assert set(replies) == {reply + "<|im_end|>"}


def test_second_build_is_cached(model_dir):
    before = (model_dir / "model.safetensors").stat().st_mtime_ns
    subprocess.run([str(MODEL_PYTHON), str(BUILDER), str(model_dir)], check=True, capture_output=True)
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == before


def test_reply_with_repeated_tokens_is_refused(tmp_path):
    result = subprocess.run([str(MODEL_PYTHON), str(BUILDER), str(tmp_path / "m"), "--reply", "the the the"],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "repeated ids" in result.stderr
