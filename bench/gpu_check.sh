#!/usr/bin/env bash
# The prepared GPU check (issue 16): on a machine with one CUDA GPU, in at most BUDGET_S seconds (9 minutes), the
# cuda tests, the tiny demo, bench/train.py (AlexNet and VGG16 teachers, batch 16 and 128), bench/precompute.py and
# the quick demo on the GPU with whatever time is left; one JSON and one Markdown summary under OUT_DIR (per step:
# command, exit code, seconds, key numbers; a failed step does not stop the check). Steps: bench/gpu_check.py.
#
#   bench/gpu_check.sh                                  # DEVICE=cuda PROFILE=gpu OUT_DIR=runs/gpu-check-gpu
#   DEVICE=cpu PROFILE=tiny OUT_DIR=/tmp/gc bench/gpu_check.sh   # CI-sized, any machine (a few minutes)
#   STEPS=train_b16,precompute bench/gpu_check.sh       # rerun some steps (the last demo resumes where it stopped)
#
# No package registry needed: when WHEELS (default .whl, made by ../shared/tools/py312-wheels on a machine with
# one) holds wheels, they are installed into SITE (/tmp/site) first and put on PYTHONPATH with the repo; the
# project's modules run with `python -m` from the repo root (no console scripts, no pip install of the repo).
# PYTHON names the interpreter (python3). Relative OUT_DIR and WHEELS are taken from the calling directory.
set -euo pipefail
started=$(date +%s)
caller=$PWD
cd "$(dirname "$0")/.."
absolute() { case $1 in /*) echo "$1" ;; *) echo "$caller/$1" ;; esac; }  # relative to where it was called
export DEVICE=${DEVICE:-cuda} PROFILE=${PROFILE:-gpu} BUDGET_S=${BUDGET_S:-540} GPU_CHECK_STARTED=$started
OUT_DIR=$(absolute "${OUT_DIR:-$PWD/runs/gpu-check-$PROFILE}")
export OUT_DIR
py=${PYTHON:-python3}
wheels=$(absolute "${WHEELS:-$PWD/.whl}")
site=${SITE:-/tmp/site}
mkdir -p "$OUT_DIR"
pythonpath=$PWD
if compgen -G "$wheels/*.whl" > /dev/null || compgen -G "$wheels/*.tar.xz" > /dev/null; then
  echo "== wheels: installing $wheels into $site"
  mkdir -p "$site"
  if compgen -G "$wheels/*.whl" > /dev/null; then
    if "$py" -m pip --version > /dev/null 2>&1; then
      "$py" -m pip install -q --no-index --no-deps --upgrade --target "$site" "$wheels"/*.whl
    else  # no pip: a wheel is a zip of its files
      for w in "$wheels"/*.whl; do "$py" -m zipfile -e "$w" "$site"; done
    fi
  fi
  for t in "$wheels"/*.tar.xz; do  # the large native ones, repacked by py312-wheels
    if [ -e "$t" ]; then tar -xJf "$t" -C "$site"; fi
  done
  pythonpath=$site:$pythonpath
else
  echo "== wheels: none in $wheels (using the interpreter's own packages)"
fi
export PYTHONPATH=$pythonpath${PYTHONPATH:+:$PYTHONPATH}
exec "$py" -m bench.gpu_check
