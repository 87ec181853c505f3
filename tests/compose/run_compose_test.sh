#!/usr/bin/env bash
# End-to-end test of docker-compose.yml on host networking with PROFILE=tiny: builds both images, brings the whole
# stack up (prepare -> teacher -> student-hha + student-flow), waits for both students to exit (bounded), checks
# their outputs in the volume (transfer checkpoints + metrics, AP reports), prints the wall time, and always tears
# the stack down with its volume (`down -v`).
# Env: SKIP_BUILD=1 (reuse built images), TEACHER_PORT (default 18765), COMPOSE_TEST_TIMEOUT (s, default 3600),
#      STANDIN_TEACHER=1 (see below), KEEP_ARTIFACTS=DIR (copy runs/transfer-*, runs/compare-* out of the volume
#      into DIR before teardown).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

export PROFILE=tiny TEACHER_PORT=${TEACHER_PORT:-18765} TEACHER_TOKEN= TEACHER_URL=
export TEACHER_ARCH=checkpoint TEACHER_WEIGHTS=/work/runs/rgb/checkpoint.pt
PROJECT=xmodalcomposetest
VOLUME=${PROJECT}_work
TIMEOUT=${COMPOSE_TEST_TIMEOUT:-3600}
LOGDIR=$(mktemp -d /tmp/xmodal-compose-test.XXXXXX)
DC=("${COMPOSE[@]}" -p "$PROJECT" -f docker-compose.yml -f docker-compose.hostnet.yml)
# STANDIN_TEACHER=1: skip the RGB detector and use a random AlexNet teacher (tests/compose/standin-teacher.yml),
# to exercise the students while `student-trainer detect` is unavailable. Not the real pipeline.
[[ ${STANDIN_TEACHER:-0} != 1 ]] || DC+=(-f tests/compose/standin-teacher.yml)
STUDENTS=(student-hha student-flow)
step=start
T0=$SECONDS

teardown() {
  local rc=$?
  "${DC[@]}" logs --no-color --timestamps >"$LOGDIR/compose.log" 2>&1 || true
  if ((rc != 0)); then
    log "FAILED at step '$step' (rc $rc); containers:"
    "${DC[@]}" ps -a 2>/dev/null || "${DC[@]}" ps >&2 || true
    log "last compose log lines:"
    tail -n 60 "$LOGDIR/compose.log" >&2
  fi
  log "down -v"
  "${DC[@]}" down -v --remove-orphans >"$LOGDIR/down.log" 2>&1 || true
  log "torn down (down -v); wall time $((SECONDS - T0)) s; logs in $LOGDIR"
}
trap teardown EXIT

remaining() { echo $((TIMEOUT - (SECONDS - T0))); }

# 0. a clean slate: nothing left over from an interrupted run.
"${DC[@]}" down -v --remove-orphans >/dev/null 2>&1 || true

step=build
[[ ${SKIP_BUILD:-0} == 1 ]] || build_images

# 1. `up -d` returns once prepare has exited 0 and the teacher is healthy (depends_on conditions) and the students
#    are started; a failing prepare makes it exit non-zero.
step="up (prepare: synth + RGB detector; teacher: precompute + serve; start students)"
log "$step"
timeout "$(remaining)" "${DC[@]}" up -d --no-build

# 2. wait for each student container to exit, within what is left of the time budget.
step="wait for students"
for svc in "${STUDENTS[@]}"; do
  cid=$("${DC[@]}" ps -q "$svc")
  [[ -n $cid ]] || { log "$svc has no container"; exit 1; }
  code=$(timeout "$(remaining)" docker wait "$cid") || { log "timeout waiting for $svc"; exit 1; }
  log "$svc exited $code"
  ((code == 0)) || { step="$svc"; exit 1; }
done

# 3. outputs, read from the volume by a throwaway container.
step="check outputs"
in_volume "$VOLUME" '
  set -euo pipefail
  status=0
  for m in hha flow; do
    for f in runs/transfer-$m/checkpoint.pt runs/transfer-$m/metrics.jsonl runs/compare-$m/report.md; do
      if [[ -s /work/$f ]]; then printf "ok       %8d  %s\n" "$(stat -c %s /work/$f)" "$f"
      else echo "MISSING  $f"; status=1; fi
    done
  done
  for m in hha flow; do
    echo "---- runs/compare-$m/report.md"; cat /work/runs/compare-$m/report.md 2>/dev/null || true
  done
  exit $status'
if [[ -n ${KEEP_ARTIFACTS:-} ]]; then
  mkdir -p "$KEEP_ARTIFACTS"
  docker run --rm --network none -v "$VOLUME:/work:ro" "$TRAINER_IMAGE" \
    tar -C /work -c runs/transfer-hha runs/transfer-flow runs/compare-hha runs/compare-flow | tar -x -C "$KEEP_ARTIFACTS"
  log "artifacts copied to $KEEP_ARTIFACTS"
fi
step=done
log "PASS in $((SECONDS - T0)) s"
