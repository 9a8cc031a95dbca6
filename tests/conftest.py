import os
import socket
import sys
from pathlib import Path

import numpy as np
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


def make_tiny_h36m(root, seed, frames_per_seq=3, image_size=128):
    """A prepared synthetic Human3.6M set (S1 train, S9 valid, one action) at ``root``; returns it."""
    from lib.datasets.synthetic import make_h36m_demo
    from run import prepare_h36m

    make_h36m_demo(root, seed=seed, frames_per_seq=frames_per_seq, image_size=image_size,
                   actions_per_subject=1, subjects=("S1", "S9"), preview=False)
    prepare_h36m.main(["--src", str(root), "--dst", str(root), "--train-interval", "1",
                       "--valid-interval", "1", "--no-check-images"])
    return root


def ref_p_mpjpe_one(pred, gt):
    """One sample's P-MPJPE by the original's per-sample Procrustes (benchmarks/reference.py), float64."""
    from benchmarks.reference import procrustes_error_mm
    return procrustes_error_mm(np.asarray(pred, np.float64), np.asarray(gt, np.float64))



def scaled_h36m_camera_json(subjects, cam_ids, scale):
    """The shipped Human3.6M cameras with intrinsics scaled by ``scale``, in the L2D
    camera_parameters.json layout (image sizes included), and the shipped cameras themselves."""
    from lib.datasets.cameras import load_h36m_cameras
    cams = load_h36m_cameras()
    intr, extr = {}, {}
    for s in subjects:
        extr[s] = {}
        for c in cam_ids:
            cam = cams[s][c]
            fx, fy, cx, cy = cam["f"][0] * scale, cam["f"][1] * scale, cam["c"][0] * scale, cam["c"][1] * scale
            intr[c] = {"width": int(round(cam["width"] * scale)), "height": int(round(cam["height"] * scale)),
                       "K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],
                       "distCoef": [cam["k"][0], cam["k"][1], cam["p"][0], cam["p"][1], cam["k"][2]]}
            extr[s][c] = {"R": cam["R"].tolist(), "t": cam["t_mm"].reshape(3, 1).tolist()}
    return {"intrinsics": intr, "extrinsics": extr}, cams

def free_port() -> int:
    """A free TCP port on 127.0.0.1 for torchrun's rendezvous."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
