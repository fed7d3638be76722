"""Shared test settings."""

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny models: one intra-op thread is faster, and far faster on a busy 2-core machine
    (the engine itself defaults to half the cores for the same reason)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
