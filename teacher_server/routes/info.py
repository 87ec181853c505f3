"""What the service holds: teacher, encoding, collections with shapes, counts and statistics."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from shared.api import CollectionInfo, CollectionStats, ServiceInfo
from teacher_server.deps import ReaderDep, SettingsDep, require_token

router = APIRouter(tags=["info"], dependencies=[Depends(require_token)])


@router.get("/info", response_model=ServiceInfo)
def info(reader: ReaderDep, settings: SettingsDep) -> ServiceInfo:
    """Teacher identity, layer, encoding, and per collection: shape, views, frames, frames done, statistics."""
    store = reader.stores[0]
    collections = {
        name: CollectionInfo(shape=col.shape, views=list(col.views), input_size=col.input_size, frames=col.n_frames,
                             frames_done=int(col.done().sum()), shard_frames=col.shard_frames,
                             stats=CollectionStats(**col.summary()))
        for s in reader.stores for name, col in s.collections.items()
    }
    return ServiceInfo(teacher=store.teacher, teacher_id=store.teacher.short_id(), layer=store.teacher.layer,
                       encoding=store.encoding.to_dict(), dtype=store.encoding.dtype, codec=store.encoding.header(),
                       frames=len(reader), max_batch=settings.max_batch, collections=collections)
