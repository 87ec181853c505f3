"""The mirror view: the teacher's own map of each mirrored frame, stored beside the identity map and served by view
(issue 18, point 4: flip-exact targets)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import torch

from shared.client import TeacherClient
from shared.errors import ViewNotStoredError
from shared.features import decode_batch, encoding
from shared.imageio import read_rgb
from shared.manifest import read_manifest
from teacher_server.app import create_app
from teacher_server.precompute import precompute
from teacher_server.settings import ServeSettings
from teacher_server.store import FeatureStore
from tests.servers import uvicorn_thread


def _teacher_of_mirrored_frames(teacher, manifest_path) -> dict[str, np.ndarray]:
    """The teacher's pool5 of every frame mirrored left-right, one frame at a time (independent of precompute)."""
    m = read_manifest(manifest_path)
    mean = torch.tensor(teacher.identity.mean).view(1, 3, 1, 1)
    std = torch.tensor(teacher.identity.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        return {f.id: teacher.trunk((torch.from_numpy(np.ascontiguousarray(read_rgb(m.path(f.rgb))[:, ::-1]))
                                     .permute(2, 0, 1)[None].float() / 255 - mean) / std)[0].numpy() for f in m}


def test_the_mirror_view_is_the_teachers_map_of_the_mirrored_frame(store_path, dataset, teacher):
    col = FeatureStore.open(store_path).collections["tiny"]
    assert col.views == ("identity", "mirror")
    expected = _teacher_of_mirrored_frames(teacher, dataset)
    mirror, identity = col.read(slice(None), "mirror"), col.read(slice(None))
    for i, fid in enumerate(col.ids):
        np.testing.assert_allclose(mirror[i], expected[fid], rtol=1e-5, atol=1e-5, err_msg=fid)
    # ...which is not the identity map flipped: a CNN is not mirror-equivariant (the reason for storing it)
    flipped = identity[..., ::-1]
    assert np.abs(flipped - mirror).max() > 1e-3 * np.abs(mirror).max()


def test_views_are_served_by_get_batch_and_client(store_path):
    col = FeatureStore.open(store_path).collections["tiny"]
    mirror, identity = col.read(slice(None), "mirror"), col.read(slice(None))
    with uvicorn_thread(create_app(ServeSettings(stores=[store_path]))) as url, TeacherClient(url) as c:
        assert c.info().collections["tiny"].views == ["identity", "mirror"]
        np.testing.assert_array_equal(c.get("tiny.0003", view="mirror"), mirror[3])
        np.testing.assert_array_equal(c.get_npy("tiny.0003", view="mirror"), mirror[3])
        got = c.get_many(["tiny.0001", "tiny.0001", "tiny.0002", "tiny.0001"],
                         views=["identity", "mirror", "mirror", "mirror"])
        np.testing.assert_array_equal(got, np.stack([identity[1], mirror[1], mirror[2], mirror[1]]))
        a = httpx.get(f"{url}/features/tiny.0003")
        b = httpx.get(f"{url}/features/tiny.0003?view=mirror")
        assert a.status_code == b.status_code == 200 and a.headers["etag"] != b.headers["etag"]
        assert httpx.get(f"{url}/features/tiny.0003?view=side").status_code == 422
        bad = httpx.post(f"{url}/features/batch", json={"ids": ["tiny.0001"], "views": ["mirror", "mirror"]})
        assert bad.status_code == 422 and "one view per id" in bad.json()["error"]["message"]


def test_a_store_without_the_mirror_view_says_so(tmp_path, dataset, teacher):
    store = tmp_path / "identity-only"
    precompute(store, [dataset], teacher, encoding("f32-zstd1"), shard_frames=8, loader_workers=0, views=["identity"],
               progress=False)
    with uvicorn_thread(create_app(ServeSettings(stores=[store]))) as url, TeacherClient(url) as c:
        r = httpx.get(f"{url}/features/tiny.0001?view=mirror")
        assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_view"
        batch = decode_batch(httpx.post(f"{url}/features/batch", json={"ids": ["tiny.0001", "tiny.0002"],
                                                                       "views": ["identity", "mirror"]}).content)
        assert [(e.status, e.code) for e in batch] == [(200, None), (404, "unknown_view")]
        with pytest.raises(ViewNotStoredError, match="unknown_view"):
            c.get_many(["tiny.0001"], views=["mirror"])
        assert c.get("tiny.0001").shape == FeatureStore.open(store).collections["tiny"].shape
