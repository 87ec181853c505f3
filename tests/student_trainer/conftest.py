"""Fixtures of the trainer tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: one thread is faster, and far faster on a busy machine (no OpenMP spinning).

    Use per module with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
