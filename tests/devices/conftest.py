"""``@pytest.mark.cuda`` tests compare CUDA with the CPU; they skip where no CUDA device is visible."""

from __future__ import annotations

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device (bench/gpu_check.sh runs these on a GPU machine)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
