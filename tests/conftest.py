import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# 2-core CI machine: keep torch from oversubscribing when several processes run.
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED = ROOT.parent / "shared"


@pytest.fixture
def shared_dir():
    """The steering repo's shared/ folder; tests that need it skip where it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared is absent (a user's clone has no shared/)")
    return SHARED
