#!/usr/bin/env bash
# Phase-1 smoke test of the compose stack on host networking, with a stand-in teacher (AlexNet, random weights):
# builds the images, runs `prepare` (dataset only, profile tiny) and `teacher` (precompute, then serve) under
# compose, waits for the container to turn healthy, then asks /healthz, /info and /features/<id> from the host.
# Always tears the stack down (`down -v`). Env: SKIP_BUILD=1, TEACHER_PORT (default 18766), SMOKE_TIMEOUT (s).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

export PROFILE=tiny TEACHER_PORT=${TEACHER_PORT:-18766} TEACHER_TOKEN= TEACHER_URL=
PROJECT=xmodalsmoke
TIMEOUT=${SMOKE_TIMEOUT:-900}
LOGDIR=$(mktemp -d /tmp/xmodal-smoke.XXXXXX)
DC=("${COMPOSE[@]}" -p "$PROJECT" -f docker-compose.yml -f docker-compose.hostnet.yml -f tests/compose/standin-teacher.yml)
url=http://127.0.0.1:$TEACHER_PORT
T0=$SECONDS

teardown() {
  local rc=$?
  "${DC[@]}" logs --no-color >"$LOGDIR/compose.log" 2>&1 || true
  ((rc == 0)) || { log "FAILED (rc $rc); last compose logs:"; tail -n 40 "$LOGDIR/compose.log" >&2; }
  log "down -v"
  "${DC[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
  log "torn down; logs in $LOGDIR"
}
trap teardown EXIT

"${DC[@]}" down -v --remove-orphans >/dev/null 2>&1 || true   # a clean slate
[[ ${SKIP_BUILD:-0} == 1 ]] || build_images
log "up prepare (synth --profile tiny) + teacher (alexnet/random precompute, serve on $url)"
timeout "$TIMEOUT" "${DC[@]}" up -d --no-build teacher
log "prepare exited 0; waiting for the teacher to turn healthy"
cid=$("${DC[@]}" ps -q teacher)
until [[ $(docker inspect -f '{{.State.Health.Status}}' "$cid") == healthy ]]; do
  [[ $(docker inspect -f '{{.State.Running}}' "$cid") == true ]] || { log "teacher container stopped"; exit 1; }
  ((SECONDS - T0 < TIMEOUT)) || { log "timeout waiting for health"; exit 1; }
  sleep 2
done
log "teacher healthy"
curl -fsS "$url/healthz"; echo
curl -fsS "$url/info" | head -c 600; echo
id=$(in_volume "${PROJECT}_work" "head -c 100000 /work/data/synth/manifest.jsonl | grep -o '\"id\": *\"[^\"]*\"' | head -n 1 | cut -d'\"' -f4")
log "GET /features/$id"
curl -fsS -D - -o "$LOGDIR/feature.bin" "$url/features/$id" | tr -d '\r' | grep -iE '^(HTTP|content-|etag|x-)'
curl -fsS -o "$LOGDIR/feature.npy" "$url/features/$id?format=npy"
python3 -c "import numpy as np, sys; a = np.load(sys.argv[1]); print('npy', a.shape, a.dtype, 'mean', float(a.mean()))" \
  "$LOGDIR/feature.npy" 2>/dev/null || ls -l "$LOGDIR"/feature.*
log "volume owner: $(in_volume "${PROJECT}_work" 'stat -c "%U:%G %a" /work /work/store /work/data/synth')"
log "PASS"
