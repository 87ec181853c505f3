"""One error table and one /info document for server and client (issue 15, point 4)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from shared.api import API_ERRORS, ServiceInfo, error_class
from shared.client import TeacherClient
from shared.errors import FeatureServiceError, FrameNotFoundError, NotYetComputedError
from teacher_server.app import create_app
from teacher_server.settings import ServeSettings
from tests.servers import uvicorn_thread

README = Path(__file__).parents[2] / "README.md"


def test_the_table_has_one_class_per_code_and_the_readme_lists_them_all():
    codes = [cls.code for cls in API_ERRORS]
    assert len(codes) == len(set(codes))
    listed = dict(re.findall(r"`([a-z_]+)` (\d{3})", README.read_text().split("## HTTP API")[1].split("\n## ")[0]))
    assert {cls.code: str(cls.status) for cls in API_ERRORS} == listed
    assert error_class("unknown_frame") is FrameNotFoundError and error_class("teapot") is None


def test_the_client_raises_the_tables_class_for_each_code(store_path):
    with uvicorn_thread(create_app(ServeSettings(stores=[store_path]))) as url, TeacherClient(url, wait=0) as c:
        with pytest.raises(FrameNotFoundError, match=r"no-such-frame.*\[404 unknown_frame\]"):
            c.get("no-such-frame")
        info = c.info()
        assert isinstance(info, ServiceInfo) and info.collections["tiny"].frames_done == 37
        assert info.teacher.short_id() == info.teacher_id
        schema = httpx.get(f"{url}/openapi.json").json()
        assert "ServiceInfo" in schema["components"]["schemas"] and "CollectionInfo" in schema["components"]["schemas"]
        ref = schema["paths"]["/info"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/ServiceInfo")


def test_an_unknown_code_or_status_is_a_feature_service_error():
    from shared.client import _raise_for

    with pytest.raises(FeatureServiceError, match="502 http_error: bad gateway") as err:
        _raise_for(502, "http_error", "bad gateway")
    assert err.value.status == 502 and err.value.code == "http_error"
    with pytest.raises(NotYetComputedError):
        _raise_for(404, "not_computed", "later")
    with pytest.raises(FeatureServiceError):  # a code with another status than the table's is not trusted
        _raise_for(500, "not_computed", "odd")
