#!/usr/bin/env python3
"""Benchmark of the gateway (not a test): prints figures and the machine they were taken on.

    python3 tools/fleet.py bench gateway        (or: .venv/bin/python bench/gateway.py [--keep] [--reuse])

Uses the Molecule scenario `rollout` (two CPU vLLM servers with the tiny model, one HAProxy gateway, one
workstation; created and converged here, destroyed at the end unless --keep):

1. latency: the same small /v1/messages request sent from the gateway host straight to a server and through
   the gateway, interleaved, n each (median, p95): what the gateway adds;
2. restart to ready: `systemctl restart vllm-main` on one server until /v1/models lists the served name;
3. rolling upgrade: `site.yml -e gpu_hosts_serial=1` with a changed unit setting (both servers
   restart, each drained first) under a two-worker request loop: requests sent, failed, longest gap;
4. the same restarts done by hand without draining, under the same loop: what the drain is worth.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, describe, docker_exec, header, molecule, scenario, scenario_arguments  # noqa: E402

sys.path.insert(0, str(REPO / "plugins" / "filter"))
from fleet_tokens import fleet_user_token  # noqa: E402

SCENARIO = "rollout"
WORKSTATION = "fleet-rollout-ws"
SERVERS = ["fleet-rollout-gpu-a", "fleet-rollout-gpu-b"]
GATEWAY_URL = "http://fleet-rollout-gw:8000"
SERVED = "Qwen3.5-27B"
GATEWAY = "fleet-rollout-gw"
# molecule/rollout/host_vars: a test fleet's tokens, not secrets. The servers take only the gateways' token
# (llm_api_token); the gateway takes only users' tokens (per-user tokens: carol's, derived from the secret).
SERVER_TOKEN = "rollout-fleet-token"
USER_TOKEN_SECRET = "rollout-per-user-token-secret-0123456789abcdef"
TOKEN = fleet_user_token(USER_TOKEN_SECRET, "carol")
LOOP = (REPO / "molecule" / "rollout" / "files" / "request_loop.py").read_text()

LATENCY_PROBE = r"""
import json, sys, time, urllib.request
targets, model, n = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])
body = json.dumps({"model": model, "max_tokens": 16,
                   "messages": [{"role": "user", "content": "Reply with one short sentence."}]}).encode()
samples = {name: [] for name in targets}
for round_number in range(n + 2):
    for name, (url, token) in targets.items():
        request = urllib.request.Request(url + "/v1/messages", data=body, method="POST", headers={
            "Content-Type": "application/json", "anthropic-version": "2023-06-01", "Authorization": "Bearer " + token})
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=60) as answer:
            answer.read()
        if round_number >= 2:  # two warm-up rounds
            samples[name].append((time.perf_counter() - started) * 1000)
print(json.dumps(samples))
"""


def start_loop(tag: str) -> None:
    docker_exec(WORKSTATION, "sh", "-c", "cat > /root/request_loop.py", stdin=LOOP)
    docker_exec(WORKSTATION, "sh", "-c", f"umask 077; printf %s {TOKEN} > /root/bench-token; rm -f /root/stop-{tag}")
    subprocess.run(["docker", "exec", "-d", WORKSTATION, "sh", "-c",
                    f"python3 /root/request_loop.py {GATEWAY_URL} {SERVED} /root/bench-token /root/stop-{tag} 1200 2 0.5"
                    f" > /root/loop-{tag}.json 2>&1"], check=True)
    time.sleep(5)


def stop_loop(tag: str) -> dict:
    docker_exec(WORKSTATION, "touch", f"/root/stop-{tag}")
    for _ in range(120):
        text = docker_exec(WORKSTATION, "cat", f"/root/loop-{tag}.json", check=False).stdout.strip()
        if text:
            return json.loads(text)
        time.sleep(1)
    raise SystemExit(f"the request loop ({tag}) gave no report")


def restart_to_ready(server: str) -> float:
    started = time.monotonic()
    docker_exec(server, "systemctl", "restart", "vllm-main.service", timeout=900)
    probe = ("import json, urllib.request\n"
             "r = urllib.request.Request('http://127.0.0.1:8000/v1/models', headers={'Authorization': 'Bearer %s'})\n"
             "print([m['id'] for m in json.load(urllib.request.urlopen(r, timeout=5))['data']])" % SERVER_TOKEN)
    while time.monotonic() - started < 900:
        if SERVED in docker_exec(server, "python3", "-c", probe, check=False).stdout:
            return time.monotonic() - started
        time.sleep(0.5)
    raise SystemExit(f"{server} did not serve {SERVED} within 900 s")


def loop_line(figures: dict) -> str:
    return (f"{figures['total']} requests, {figures['failed']} failed, longest gap between answers "
            f"{figures['max_gap_s']} s" + (f"; first failures: {figures['failures'][:3]}" if figures["failed"] else ""))


def main() -> int:
    parser = scenario_arguments(__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50, help="requests per path for the latency figure")
    args = parser.parse_args()
    header("gateway benchmark (molecule/rollout: 2 CPU vLLM servers, tiny model, HAProxy, 1 workstation)")
    with scenario(SCENARIO, keep=args.keep, reuse=args.reuse) as set_up:
        if set_up is not None:
            print(f"set-up (create, prepare, converge with site.yml): {set_up:.0f} s")

        # Both measured from the gateway's host: only the gateways may reach a server's port directly.
        targets = {"direct": [f"http://{SERVERS[0]}:8000", SERVER_TOKEN], "gateway": [GATEWAY_URL, TOKEN]}
        result = docker_exec(GATEWAY, "python3", "-c", LATENCY_PROBE, json.dumps(targets), SERVED,
                             str(args.samples), timeout=1800)
        samples = json.loads(result.stdout)
        direct, gateway = samples["direct"], samples["gateway"]
        print("1. /v1/messages latency from the gateway host (non-streamed, 16 tokens max, interleaved):")
        print(f"   direct to {SERVERS[0]}: {describe(direct)}")
        print(f"   through the gateway:     {describe(gateway)}")
        median = sorted(gateway)[len(gateway) // 2] - sorted(direct)[len(direct) // 2]
        print(f"   the gateway adds about {median:.1f} ms at the median")

        seconds = restart_to_ready(SERVERS[1])
        print(f"2. restart to ready ({SERVERS[1]}: systemctl restart until /v1/models lists {SERVED}): {seconds:.1f} s")
        docker_exec("fleet-rollout-gw", "sh", "-c", "sleep 6")  # let the gateway's checks see it UP again

        start_loop("rolling")
        started = time.monotonic()
        # A changed unit setting restarts each server (a value it surely does not have yet).
        molecule(SCENARIO, "converge", "--", "-e",
                 json.dumps({"gpu_hosts_serial": 1, "vllm_restart_sec": 12 + int(time.time()) % 40}))
        rollout = time.monotonic() - started
        figures = stop_loop("rolling")
        print(f"3. rolling upgrade of both servers (site.yml -e gpu_hosts_serial=1, drain on the gateway): "
              f"{rollout:.0f} s; {loop_line(figures)}")

        start_loop("nodrain")
        for server in SERVERS:
            restart_to_ready(server)
            time.sleep(6)
        figures = stop_loop("nodrain")
        print(f"4. the same restarts by hand, without draining: {loop_line(figures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
