import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# ../shared beside the checkout (CI), or L2D_SHARED pointing elsewhere.
SHARED = Path(os.environ.get("L2D_SHARED", ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def shared_data():
    """Path to ../shared/data/h36m_sample, or skip when the real sample data is absent."""
    path = SHARED / "data" / "h36m_sample"
    if not (path / "test_h36m_body3d.npz").is_file():
        pytest.skip("real Human3.6M sample data (../shared/data/h36m_sample) not present")
    return path
