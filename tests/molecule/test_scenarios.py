"""Every Molecule scenario under molecule/, each a full `molecule test` in systemd containers.

The output of each run goes to .cache/logs/molecule-<scenario>.log; a failing run shows its tail.
MOLECULE_SCENARIOS=a,b limits the run to those scenarios.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO

LOG_DIR = REPO / ".cache" / "logs"


def scenarios():
    names = sorted(p.parent.name for p in (REPO / "molecule").glob("*/molecule.yml"))
    wanted = os.environ.get("MOLECULE_SCENARIOS")
    return [n for n in names if not wanted or n in wanted.split(",")]


@pytest.mark.molecule
@pytest.mark.parametrize("scenario", scenarios())
def test_molecule_scenario(scenario):
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"molecule-{scenario}.log"
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", PY_COLORS="0", NO_COLOR="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    started = time.monotonic()
    with open(log, "w") as handle:
        rc = subprocess.call([sys.executable, "-m", "molecule", "test", "-s", scenario],
                             cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
    elapsed = time.monotonic() - started
    print(f"molecule scenario {scenario}: rc={rc} in {elapsed:.0f} s (log: {log.relative_to(REPO)})")
    if rc != 0:
        tail = log.read_text(errors="replace")[-15000:]
        pytest.fail(f"molecule test -s {scenario} failed (rc={rc}); last lines of {log}:\n{tail}")
