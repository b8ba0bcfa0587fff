"""Test set-up: without a CUDA GPU the Triton kernels run in Triton's CPU interpreter.

TRITON_INTERPRET must be set before any ``@triton.jit`` function is defined, so it is set
here, before a test imports ``unisparse.kernels``.
"""

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)


@pytest.fixture
def seed():
    """A fresh seed per test run (printed on failure), so inputs are never the same twice."""
    value = int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(value)
    print(f"seed={value}")
    return value


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models spend their time in thread hand-offs: on a busy 2-core machine one torch thread
    is 10-30x faster than two. Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
