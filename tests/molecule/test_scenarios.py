"""Every Molecule scenario under molecule/, each a full `molecule test` in systemd containers.

The scenarios run in MOLECULE_LANES parallel lanes (default 2; 1 runs them one after another): each
lane runs its scenarios one after another, the longest first, so the two longest never share a lane
and the short ones fill the gaps. Three lanes were measured on the 2-core CI machine (2026-12-01): no
faster, the scenarios are CPU-bound (e2e took over 40 minutes instead of 33). Lanes start when the first scenario test starts; each test waits
for its own scenario's result. Every scenario has its own containers, network and log.

The output of each run goes to .cache/logs/molecule-<scenario>.log; a failing run shows its tail.
MOLECULE_SCENARIOS=a,b limits the run to those scenarios. Each run gets FLEET_CACHE_DIR, the test
cache its bind mounts come from (tools/test_assets.py's default when it is not set).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, load_plugin

LOG_DIR = REPO / ".cache" / "logs"
CACHE = load_plugin("tools/test_assets.py", "fleet_test_assets").default_cache_dir()

# Minutes each scenario took on a 2-core machine run alone (CI figures): only used to balance the lanes.
EXPECTED_MINUTES = {"rollout": 29, "e2e": 21, "vllm": 13, "datacenter": 10, "claude_code": 5, "nvidia_cuda": 5}


def scenarios():
    names = sorted(p.parent.name for p in (REPO / "molecule").glob("*/molecule.yml"))
    wanted = os.environ.get("MOLECULE_SCENARIOS")
    return [n for n in names if not wanted or n in wanted.split(",")]


def plan_lanes(names, lanes):
    """Longest first, each to the lane that is free soonest: [[scenario, ...], ...] (no empty lane)."""
    plan = [[] for _ in range(max(1, lanes))]
    load = [0] * len(plan)
    for name in sorted(names, key=lambda n: (-EXPECTED_MINUTES.get(n, 10), n)):
        lane = load.index(min(load))
        plan[lane].append(name)
        load[lane] += EXPECTED_MINUTES.get(name, 10)
    return [lane for lane in plan if lane]


def run_scenario(scenario):
    """One `molecule test -s scenario`: (rc, seconds, log path)."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"molecule-{scenario}.log"
    # profile_tasks stamps each task with the time and its duration, so the log says where a run's minutes go.
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", PY_COLORS="0", NO_COLOR="1", FLEET_CACHE_DIR=str(CACHE),
               ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    started = time.monotonic()
    with open(log, "w") as handle:
        rc = subprocess.call([sys.executable, "-m", "molecule", "test", "-s", scenario],
                             cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
    return rc, time.monotonic() - started, log


class Lanes:
    """Runs the scenarios in background lanes; result(name) blocks until that scenario has finished."""

    def __init__(self, names, lanes):
        self.results = {}
        self.done = {name: threading.Event() for name in names}
        self.plan = plan_lanes(names, lanes)
        for lane in self.plan:
            threading.Thread(target=self._run_lane, args=(lane,), daemon=True).start()

    def _run_lane(self, lane):
        for name in lane:
            try:
                self.results[name] = run_scenario(name)
            except Exception as exc:  # reported by the scenario's test, not lost in a thread
                self.results[name] = (None, 0.0, exc)
            self.done[name].set()

    def result(self, name):
        self.done[name].wait()
        return self.results[name]


@pytest.fixture(scope="session")
def lanes():
    return Lanes(scenarios(), int(os.environ.get("MOLECULE_LANES", "2")))


@pytest.mark.molecule
@pytest.mark.parametrize("scenario", scenarios())
def test_molecule_scenario(scenario, lanes):
    rc, elapsed, log = lanes.result(scenario)
    if rc is None:
        pytest.fail(f"molecule test -s {scenario} could not be run: {log!r}")
    lane = next(index for index, names in enumerate(lanes.plan) if scenario in names)
    print(f"molecule scenario {scenario}: rc={rc} in {elapsed:.0f} s, lane {lane + 1} of {len(lanes.plan)} "
          f"(log: {log.relative_to(REPO)})")
    if rc != 0:
        tail = log.read_text(errors="replace")[-15000:]
        pytest.fail(f"molecule test -s {scenario} failed (rc={rc}); last lines of {log}:\n{tail}")
