import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT / "examples", ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Each test starts with an empty Dynamo cache so compile counts are the test's own."""
    torch._dynamo.reset()
    yield
