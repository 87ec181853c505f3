#!/usr/bin/env bash
# `student-hha` / `student-flow` services: supervision transfer from the teacher service to a student trunk on one
# modality, then detectors for every init (no init, copy from RGB, supervision transfer, ...) and the AP report.
# Usage: student.sh hha|flow
set -euo pipefail

modality=${1:?usage: student.sh hha|flow}
: "${PROFILE:=quick}" "${SYNTH_DIR:=/work/data/synth}" "${RUNS_DIR:=/work/runs}"
: "${TEACHER_URL:=http://teacher:${TEACHER_PORT:-8000}}"
manifest=$SYNTH_DIR/manifest.jsonl
# The token goes through the environment (STUDENT_TEACHER_TOKEN = --teacher-token), never the command line.
if [[ -n ${TEACHER_TOKEN:-} ]]; then export STUDENT_TEACHER_TOKEN=$TEACHER_TOKEN; fi

echo "student-$modality: supervision transfer from $TEACHER_URL -> $RUNS_DIR/transfer-$modality"
student-trainer transfer --modality "$modality" --teacher-url "$TEACHER_URL" \
  --manifest "$manifest" --out "$RUNS_DIR/transfer-$modality" --profile "$PROFILE"

echo "student-$modality: detectors for every init + AP report -> $RUNS_DIR/compare-$modality"
student-trainer compare --modality "$modality" --manifest "$manifest" \
  --transfer "$RUNS_DIR/transfer-$modality/checkpoint.pt" --rgb-run "$RUNS_DIR/rgb" \
  --out "$RUNS_DIR/compare-$modality" --profile "$PROFILE"
echo "student-$modality: done"
