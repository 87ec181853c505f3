"""What the service holds: teacher, encoding, collections with shapes, counts and statistics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from teacher_server.deps import ReaderDep, SettingsDep, require_token

router = APIRouter(tags=["info"], dependencies=[Depends(require_token)])


@router.get("/info")
def info(reader: ReaderDep, settings: SettingsDep) -> dict[str, Any]:
    """Teacher identity, layer, encoding, and per collection: shape, frames, frames done, statistics."""
    store = reader.stores[0]
    collections = {}
    for s in reader.stores:
        for name, col in s.collections.items():
            collections[name] = {
                "shape": list(col.shape), "views": list(col.views), "input_size": list(col.input_size),
                "frames": col.n_frames,
                "frames_done": int(col.done().sum()), "shard_frames": col.shard_frames, "stats": col.summary(),
            }
    return {
        "teacher": store.teacher.model_dump(),
        "teacher_id": store.teacher.short_id(),
        "layer": store.teacher.layer,
        "encoding": store.encoding.to_dict(),
        "dtype": store.encoding.dtype,
        "codec": store.encoding.header(),
        "frames": len(reader),
        "max_batch": settings.max_batch,
        "collections": collections,
    }
