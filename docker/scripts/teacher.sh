#!/usr/bin/env bash
# `teacher` service: precompute the frozen RGB teacher's pool5 maps into the feature store (resumable: a restart
# skips finished shards), then serve them. The container turns healthy when /healthz answers, i.e. after precompute.
# Every teacher-server flag can also be set by its TEACHER_* env var (`teacher-server serve --help`).
set -euo pipefail

: "${SYNTH_DIR:=/work/data/synth}" "${STORE_DIR:=/work/store}" "${RUNS_DIR:=/work/runs}"
: "${TEACHER_ARCH:=checkpoint}" "${TEACHER_WEIGHTS:=$RUNS_DIR/rgb/checkpoint.pt}"
: "${TEACHER_HOST:=0.0.0.0}" "${TEACHER_PORT:=8000}"
# An empty token means no auth (the server would otherwise require an empty bearer token).
[[ -n ${TEACHER_TOKEN:-} ]] || unset TEACHER_TOKEN

echo "teacher: precompute $TEACHER_ARCH ($TEACHER_WEIGHTS) over $SYNTH_DIR/manifest.jsonl -> $STORE_DIR"
teacher-server precompute --store "$STORE_DIR" --manifests "$SYNTH_DIR/manifest.jsonl" \
  --arch "$TEACHER_ARCH" --weights "$TEACHER_WEIGHTS" --no-progress

echo "teacher: serve $STORE_DIR on $TEACHER_HOST:$TEACHER_PORT"
exec teacher-server serve --stores "$STORE_DIR" --host "$TEACHER_HOST" --port "$TEACHER_PORT"
