#!/usr/bin/env python3
"""Benchmark of vLLM's prefix cache under the real Claude Code CLI (not a test): prints figures.

    python3 tools/fleet.py bench prefix_cache     (or: .venv/bin/python bench/prefix_cache.py [--keep] [--reuse])

Uses the Molecule scenario `e2e` (CPU vLLM with the tiny model on fleet-e2e-gpu, Claude Code 2.1.331 for
alice on fleet-e2e-ws12; created and converged here with site.yml, destroyed at the end unless --keep).
For CLAUDE_CODE_ATTRIBUTION_HEADER "0" (what the role writes) and then "1", alice runs `claude -p` twice;
around each call the server's /metrics counters vllm:prefix_cache_queries and vllm:prefix_cache_hits
(tokens looked up in / found in the prefix cache) are read, so each call's hit rate is measured. The
second call of each pair is the one that matters: it repeats the same ~13k-token system prompt.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import docker_exec, header, scenario, scenario_arguments  # noqa: E402

SCENARIO = "e2e"
SERVER = "fleet-e2e-gpu"
WORKSTATION = "fleet-e2e-ws12"
USER = "alice"
SETTINGS = f"/home/{USER}/.claude/settings.json"
METRICS = ("import urllib.request\n"
           "print(urllib.request.urlopen('http://127.0.0.1:8000/metrics', timeout=10).read().decode())")


def counters() -> dict[str, float]:
    text = docker_exec(SERVER, "python3", "-c", METRICS).stdout
    found: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"^(vllm:(prefix_cache_queries|prefix_cache_hits|prompt_tokens))(_total)?(\{[^}]*\})? "
                         r"([0-9.eE+-]+)$", line)
        if match:
            found[match.group(2)] = found.get(match.group(2), 0.0) + float(match.group(5))
    return found


def set_attribution_header(value: str) -> None:
    edit = ("import json, sys; p = sys.argv[1]; d = json.load(open(p)); "
            "d['env']['CLAUDE_CODE_ATTRIBUTION_HEADER'] = sys.argv[2]; json.dump(d, open(p, 'w'), indent=2)")
    docker_exec(WORKSTATION, "python3", "-c", edit, SETTINGS, value)


def claude_call() -> float:
    started = time.monotonic()
    docker_exec(WORKSTATION, "runuser", "-u", USER, "--", "env", "-i", f"HOME=/home/{USER}",
                "PATH=/usr/local/bin:/usr/bin:/bin", "sh", "-c",
                "cd /tmp && claude -p 'Reply with one short sentence.'", timeout=600)
    return time.monotonic() - started


def main() -> int:
    args = scenario_arguments(__doc__.splitlines()[0]).parse_args()
    header("prefix-cache benchmark (molecule/e2e: CPU vLLM 0.32.0, tiny model, Claude Code 2.1.331)")
    with scenario(SCENARIO, keep=args.keep, reuse=args.reuse):
        start = counters()
        if "prefix_cache_queries" not in start:
            print(f"the server exports no vllm:prefix_cache_* counters; it has: {sorted(start)}")
            return 1
        rows = []
        for value in ("0", "1"):
            set_attribution_header(value)
            for call in (1, 2):
                before = counters()
                seconds = claude_call()
                after = counters()
                delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
                queries, hits = delta.get("prefix_cache_queries", 0.0), delta.get("prefix_cache_hits", 0.0)
                rows.append((value, call, delta.get("prompt_tokens", 0.0), queries, hits,
                             hits / queries if queries else 0.0, seconds))
        set_attribution_header("0")
        print("ATTRIBUTION_HEADER  call  prompt tokens  cache lookups  cache hits  hit rate  claude -p")
        for value, call, prompt, queries, hits, rate, seconds in rows:
            print(f"{value!r:>18}  {call:>4}  {prompt:>13.0f}  {queries:>13.0f}  {hits:>10.0f}  {rate:>8.1%}  "
                  f"{seconds:>7.1f} s")
        second = {value: rate for value, call, _p, _q, _h, rate, _s in rows if call == 2}
        print(f"second call's hit rate: {second['0']:.1%} with \"0\", {second['1']:.1%} with \"1\" "
              f"(counters in tokens; all requests of one `claude -p` call counted)")
        print(json.dumps({"rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
