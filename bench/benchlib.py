"""Shared helpers of the benchmarks: the machine header, Molecule and container commands, figures.

Not a test module: each bench/<name>.py prints figures; nothing here asserts timings.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    memory_kib = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return f"{os.cpu_count()} cores ({cpu}), {memory_kib / 1024 / 1024:.0f} GiB, {platform.platform()}"


def header(title: str) -> None:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"== {title}")
    print(f"   date {time.strftime('%Y-%m-%d %H:%M %Z')}, machine: {machine()}")
    print(f"   load average at start: {load} (other work on the machine skews the figures)")
    sys.stdout.flush()


def molecule(scenario: str, action: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`molecule ACTION -s SCENARIO [ARGS]` (ARGS after "--" go to ansible-playbook)."""
    env = dict(os.environ, NO_COLOR="1", PY_COLORS="0", ANSIBLE_FORCE_COLOR="0")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    result = subprocess.run([sys.executable, "-m", "molecule", action, "-s", scenario, *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    if check and result.returncode != 0:
        sys.stdout.write(result.stdout[-6000:])
        raise SystemExit(f"molecule {action} -s {scenario} {' '.join(args)} failed (rc={result.returncode})")
    return result


def scenario_arguments(description: str) -> argparse.ArgumentParser:
    """The options of a benchmark on one Molecule scenario: --keep and --reuse (see scenario())."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--keep", action="store_true", help="leave the containers running")
    parser.add_argument("--reuse", action="store_true", help="use the scenario's running containers")
    return parser


@contextlib.contextmanager
def scenario(name: str, keep: bool = False, reuse: bool = False):
    """The Molecule scenario `name` fresh (destroyed, created, prepared, converged) or, with reuse, as it runs;
    destroyed at the end unless keep. Yields the set-up's seconds (None when reused)."""
    try:
        started = time.monotonic()
        if not reuse:
            molecule(name, "destroy", check=False)
            for action in ("create", "prepare", "converge"):
                molecule(name, action)
        yield None if reuse else time.monotonic() - started
    finally:
        if not keep:
            molecule(name, "destroy", check=False)


def docker_exec(container: str, *command: str, check: bool = True, stdin: str | None = None,
                timeout: float | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", "exec", "-i", container, *command], input=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, timeout=timeout)
    if check and result.returncode != 0:
        raise SystemExit(f"{container}: {' '.join(command)} failed (rc={result.returncode}): "
                         f"{(result.stderr or result.stdout)[-2000:]}")
    return result


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def describe(values: list[float], unit: str = "ms") -> str:
    if not values:
        return "no samples"
    return (f"n={len(values)} median {statistics.median(values):.1f} {unit}, p95 {percentile(values, 0.95):.1f} {unit}, "
            f"min {min(values):.1f}, max {max(values):.1f}")
