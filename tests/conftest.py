"""Shared test settings and fixtures."""

import shutil
import tempfile
from pathlib import Path

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


@pytest.fixture
def run_dir():
    """A fresh run directory with a short path: pytest's tmp_path can exceed the 107-byte AF_UNIX
    limit of the control socket, /tmp keeps it short."""
    path = Path(tempfile.mkdtemp(prefix="esp-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
