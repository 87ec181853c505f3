"""``teacher-server``: precompute teacher features into a Zarr store, serve them, verify them."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

from shared.errors import XModalError
from shared.settings import Command, run_commands
from teacher_server.settings import MigrateSettings, PrecomputeSettings, ServeSettings, VerifySettings

__all__ = ["main"]


PIPELINE_OPENMP = {"OMP_WAIT_POLICY": "PASSIVE"}
"""OpenMP settings of a precompute process, set (unless given) before torch loads OpenMP. The teacher's forward
shares the cores with the image-decoding workers and the shard writer; OpenMP threads that spin while waiting for
the rest of their team take the cores those need: on 2 busy cores a 2-thread forward ran at 1/4 of the speed of a
1-thread one with spinning, and at the same speed passive (BENCHMARKS.md, "Precompute pipeline")."""


def _precompute(s: PrecomputeSettings) -> None:
    for name, value in PIPELINE_OPENMP.items():
        os.environ.setdefault(name, value)
    from shared.distributed import process_group, rank_device, ranks_from_env
    from shared.features import encoding
    from shared.nets.teachers import load_teacher
    from teacher_server.precompute import precompute, total_over_ranks, worker_slot

    if s.input_size is not None and len(s.input_size) != 2:
        raise XModalError(f"--input-size takes two numbers H W, got {s.input_size}")
    ranks = ranks_from_env()  # torchrun: each rank owns its slot of the shards, on its own GPU
    worker, device = worker_slot(s.worker, ranks), rank_device(s.device, ranks)
    teacher = load_teacher(s.arch, s.weights, seed=s.seed, layer=s.layer)
    with process_group(device, ranks):
        summary = precompute(
            s.store, s.manifests, teacher, encoding(s.encoding), splits=s.splits,
            input_size=tuple(s.input_size) if s.input_size else None,  # type: ignore[arg-type]
            shard_frames=s.shard_frames, batch_size=s.batch_size, loader_workers=s.loader_workers,
            device=device, amp=s.amp, views=s.views, worker=worker, repair=s.repair, progress=s.progress,
        )
        summary = total_over_ranks(summary, s.store, ranks)
    if not ranks.is_main:
        return
    print(f"teacher {teacher.identity.short_id()}: computed {summary.frames_computed} frames "
          f"({summary.shards_written} shards) in {summary.seconds:.1f} s = {summary.frames_per_second:.1f} frames/s; "
          f"{summary.frames_skipped} already done")
    for name, stats in summary.collections.items():
        ratio = stats.get("compression_ratio")
        print(f"  {name}: {stats.get('frames_done', 0)} frames done, {stats.get('stored_bytes', 0) / 1e6:.2f} MB stored"
              + (f", ratio {ratio:.2f}x vs float32, max rel. error {stats['max_relative_error']:.2e}" if ratio else ""))


def _serve(s: ServeSettings) -> None:
    import uvicorn

    from shared.settings import settings_env
    from teacher_server.app import create_app, open_reader
    from teacher_server.server import uvicorn_options

    # Open and check the stores here, before uvicorn: a bad path, duplicate ids or mixed teachers fail with one
    # line and exit 2 instead of a traceback from inside the app's lifespan (the app opens them again).
    open_reader(s).close()
    if s.workers == 1:
        uvicorn.run(create_app(s), host=s.host, port=s.port, log_level=s.log_level, **uvicorn_options(s))
        return
    # Several workers need an import string: hand every validated setting over through the environment.
    os.environ.update(settings_env(s))
    uvicorn.run("teacher_server.app:create_app_from_env", factory=True, host=s.host, port=s.port,
                workers=s.workers, log_level=s.log_level, **uvicorn_options(s))  # (the options pickle)


def _verify(s: VerifySettings) -> None:
    from teacher_server.store import FeatureStore
    from teacher_server.verify import verify_store

    store = FeatureStore.open(s.store)
    damage = verify_store(store, s.manifests or (), s.splits)
    for d in damage:
        print(json.dumps(d.to_dict()))
    done = sum(int(c.done().sum()) for c in store.collections.values())
    frames = len({d.frame_id for d in damage if d.frame_id is not None})
    print(f"{s.store}: {done} done frames checked, {frames} damaged frames, {len(damage)} findings",
          file=sys.stderr)
    if damage:
        raise XModalError(f"{len(damage)} findings; rerun precompute with --repair (and the same manifests) to "
                          "rewrite what is damaged")


def _migrate(s: MigrateSettings) -> None:
    from teacher_server.migrate import migrate_store

    copied, skipped = migrate_store(s.store, s.out, progress=s.progress)
    print(f"{s.out}: copied {copied} shards from {s.store} ({skipped} already there); `teacher-server verify "
          f"--store {s.out}` checks the copy")


_COMMANDS: dict[str, Command] = {
    "precompute": (PrecomputeSettings, _precompute,
                   "run a frozen teacher over manifests' RGB frames and store pool5 maps (resumable, --worker i/n)"),
    "serve": (ServeSettings, _serve, "serve stored maps over HTTP (GET /features/{id}, POST /features/batch)"),
    "verify": (VerifySettings, _verify, "check every done frame's bytes and the store's metadata (with --manifests: "
               "its ids) and list what is damaged (exit 2 if any)"),
    "migrate": (MigrateSettings, _migrate, "copy a version-1 store (no chunk checksums) into a new version-2 store, "
                "shard by shard (resumable); the values stay bit-identical"),
}


def main(argv: Sequence[str] | None = None) -> int:
    return run_commands(
        "teacher-server",
        "Teacher feature cache: precompute a frozen RGB teacher's pool5 maps into a Zarr v3 store and serve them "
        "by frame id. Every flag can also be set by the TEACHER_* env var named in its help.",
        _COMMANDS, argv,
    )


if __name__ == "__main__":
    sys.exit(main())
