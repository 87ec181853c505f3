#!/usr/bin/env bash
# One-shot `prepare` service: render + encode the synthetic dataset, then train the RGB detector whose trunk becomes
# the teacher. Both commands are resumable, so rerunning the service continues where it stopped.
# Usage: prepare.sh [all|data|rgb]        (default all; `data` stops after the dataset)
set -euo pipefail

step=${1:-all}
: "${PROFILE:=quick}" "${SYNTH_DIR:=/work/data/synth}" "${RUNS_DIR:=/work/runs}"
manifest=$SYNTH_DIR/manifest.jsonl

case $step in
  all | data | rgb) ;;
  *) echo "prepare.sh: unknown step '$step' (expected all, data or rgb)" >&2; exit 64 ;;
esac

if [[ $step != rgb ]]; then
  echo "prepare: dataset (profile $PROFILE) -> $SYNTH_DIR"
  xmodal-data synth --profile "$PROFILE" --out "$SYNTH_DIR" --no-progress
fi
if [[ $step != data ]]; then
  echo "prepare: RGB detector (the teacher) -> $RUNS_DIR/rgb"
  student-trainer detect --modality rgb --init random --manifest "$manifest" --out "$RUNS_DIR/rgb" --profile "$PROFILE"
fi
echo "prepare: done"
