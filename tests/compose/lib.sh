# Shared by the compose test scripts (sourced). Sets: ROOT, TRAINER_IMAGE, TEACHER_IMAGE, the COMPOSE command and
# helpers. Every script runs from the repository root.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

export TRAINER_IMAGE=${TRAINER_IMAGE:-xmodal-trainer:latest}
export TEACHER_IMAGE=${TEACHER_IMAGE:-xmodal-teacher:latest}

# Compose v2 (`docker compose`) where installed, else v1 (`docker-compose`, Debian's 1.29).
if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
# Without buildx the docker CLI needs the classic builder (as with Debian's docker.io on this machine).
docker buildx version >/dev/null 2>&1 || export DOCKER_BUILDKIT=0

log() { printf '[%s +%4ds] %s\n' "$(date +%T)" "$((SECONDS - ${T0:-0}))" "$*"; }

build_images() {
  local target image
  for target in trainer teacher; do
    image=TRAINER_IMAGE; [[ $target == teacher ]] && image=TEACHER_IMAGE
    log "build $target -> ${!image}"
    docker build --network host -f docker/Dockerfile --target "$target" -t "${!image}" . >"$LOGDIR/build-$target.log" 2>&1 \
      || { tail -n 40 "$LOGDIR/build-$target.log" >&2; return 1; }
  done
}

# Run a shell command in a throwaway container with the project's volume at /work (read-only, no network).
in_volume() { docker run --rm --network none -v "$1:/work:ro" "$TRAINER_IMAGE" bash -c "$2"; }
