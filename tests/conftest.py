import os

import pytest
import torch

# Two cores here and in CI: more threads only fight each other.
torch.set_num_threads(min(2, os.cpu_count() or 1))
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each test compiles from scratch: no cache entries or recompile counters leak between tests."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
