#!/usr/bin/env python3
"""Benchmark of fleet convergence (not a test): site.yml on 1, 5, 10 and 20 fresh workstations.

    python3 tools/fleet.py bench fleet_convergence   (or: .venv/bin/python bench/fleet_convergence.py --sizes 1,5)

For each size N: N fresh Debian 12 systemd containers (bench-ws-1..N, the Molecule platforms' options) in a
generated inventory (group workstations, the bundled group_vars), then `ansible-playbook site.yml
--skip-tags smoke -f N` (there is no server to smoke-test: the workstation part, Node.js from Debian's
mirrors and the pinned Claude Code CLI from npm, whose download cache ~/.cache/claude-vllm-fleet/npm is
shared with the containers as in the tests), then the same run again: the no-op drift-correction run,
whose change count must be 0. Prints wall times, the ratio to one host, and the change counts. The
containers are removed after each size (and on failure or Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, header  # noqa: E402

sys.path.insert(0, str(REPO / "tools"))
import test_assets  # noqa: E402

IMAGE = "claude-vllm-fleet/debian12-systemd:latest"
NPM_CACHE = test_assets.default_cache_dir() / "npm"


def start_containers(count: int) -> list[str]:
    names = [f"bench-ws-{n}" for n in range(1, count + 1)]
    remove_containers(names)
    NPM_CACHE.mkdir(parents=True, exist_ok=True)
    for name in names:
        subprocess.run(["docker", "run", "-d", "--name", name, "--hostname", name,
                        "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "--security-opt", "seccomp=unconfined",
                        "--cgroupns", "host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
                        "-v", f"{NPM_CACHE}:/root/.npm:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock",
                        "--stop-signal", "SIGRTMIN+3", IMAGE, "/lib/systemd/systemd"],
                       check=True, stdout=subprocess.DEVNULL)
    return names


def remove_containers(names: list[str]) -> None:
    subprocess.run(["docker", "rm", "-f", *names], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def write_inventory(directory: Path, names: list[str]) -> Path:
    (directory / "group_vars").symlink_to(REPO / "inventory" / "default" / "group_vars")
    hosts = "\n".join(f"        {name}:" for name in names)
    inventory = directory / "hosts.yml"
    inventory.write_text("all:\n  vars:\n    ansible_connection: community.docker.docker\n  children:\n"
                         f"    workstations:\n      hosts:\n{hosts}\n")
    return inventory


def converge(inventory: Path, forks: int) -> tuple[float, int, int]:
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", NO_COLOR="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    started = time.monotonic()
    result = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
                             "site.yml", "--skip-tags", "smoke", "-f", str(forks)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    seconds = time.monotonic() - started
    recap = re.findall(r"^\S+\s*: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", result.stdout, re.M)
    if result.returncode != 0 or not recap:
        sys.stdout.write(result.stdout[-5000:])
        raise SystemExit(f"site.yml failed (rc={result.returncode})")
    return seconds, sum(int(c) for c, _u, _f in recap), len(recap)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,5,10,20", help="comma-separated host counts (default 1,5,10,20)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    header(f"fleet convergence benchmark: site.yml (workstation part) on {args.sizes} fresh Debian 12 containers")
    rows = []
    for size in sizes:
        names = start_containers(size)
        try:
            with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
                inventory = write_inventory(Path(tmp), names)
                first, first_changes, hosts = converge(inventory, forks=size)
                again, again_changes, _ = converge(inventory, forks=size)
        finally:
            remove_containers(names)
        rows.append((size, first, first_changes, again, again_changes, hosts))
        print(f"   {size} host(s): first converge {first:.0f} s ({first_changes} changes), "
              f"no-op run {again:.0f} s ({again_changes} changes)")
        sys.stdout.flush()
    base = rows[0][1] / rows[0][0] if rows else 1.0
    print("hosts  forks  first converge  ratio to 1 host  no-op run  changes on the no-op run")
    for size, first, _changes, again, again_changes, _hosts in rows:
        ratio = first / (rows[0][1] if rows[0][0] == 1 else base)
        print(f"{size:>5}  {size:>5}  {first:>12.0f} s  {ratio:>15.2f}  {again:>7.0f} s  {again_changes:>24}")
    print("(npm's download cache is shared with the containers; apt downloads are real: Debian's mirrors)")
    return 0 if all(row[4] == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
