"""prepare_h36m reads a dataset's own split plan (splits.json): subject lists with a test split, and
pose-only splits carried into the prepared index."""
import json

import numpy as np
import pytest

from lib.datasets import index as idx
from lib.datasets.prepare_h36m import prepare_h36m
from lib.datasets.synthetic import make_h36m_demo
from lib.utils.errors import BadValueError


def _quiet(src, **kw):
    kw = {"train_interval": 1, "valid_interval": 1, "check_images": False, "progress": False,
          "log": lambda *_: None, **kw}
    return prepare_h36m(src, src, **kw)


@pytest.fixture()
def tree(tmp_path):
    root = tmp_path / "data"
    make_h36m_demo(root, frames_per_seq=2, image_size=64, actions_per_subject=1, subjects=("S1", "S9", "S11"),
                   preview=False)
    return root


def _pose_only_arrays(n):
    arrays = idx.empty_split(17)
    arrays = {k: np.zeros((n,) + v.shape[1:], v.dtype) for k, v in arrays.items()}
    arrays["image"] = np.full(n, "")
    arrays["subject"] = np.full(n, "S1")
    arrays["cam_R"][:] = np.eye(3)
    return arrays


def test_plan_names_subjects_and_a_test_split(tree):
    (tree / "splits.json").write_text(json.dumps({"subjects": {"train": ["S1"], "valid": ["S9"], "test": ["S11"]}}))
    info = _quiet(tree, splits=("train", "valid", "test"), test_interval=1)
    assert {s: v["subjects"] for s, v in info["splits"].items()} == {"train": ["S1"], "valid": ["S9"], "test": ["S11"]}
    for split, subject in (("valid", "S9"), ("test", "S11")):
        _info, arrays = idx.load_split(tree, split, "h36m")
        assert set(arrays["subject"].tolist()) == {subject} and len(arrays["image"]) == 4 * 2


def test_test_interval(tree):
    (tree / "splits.json").write_text(json.dumps({"subjects": {"train": ["S1"], "valid": ["S9"], "test": ["S11"]}}))
    info = _quiet(tree, splits=("train", "test"), test_interval=2)
    assert info["splits"]["test"]["count"] == 4 and info["splits"]["test"]["interval"] == 2


def test_without_plan_the_splits_are_human36ms(tree):
    info = _quiet(tree)
    assert info["splits"]["valid"]["subjects"] == ["S9", "S11"] and "test" not in info["splits"]
    with pytest.raises(BadValueError, match="splits.json"):
        _quiet(tree, splits=("train", "test"), force=True)


def test_pose_only_split_is_carried_and_the_plan_is_fingerprinted(tree):
    np.savez(tree / "train_poses.npz", **_pose_only_arrays(7))
    (tree / "splits.json").write_text(json.dumps({"subjects": {"train": ["S1"], "valid": ["S9", "S11"]},
                                                  "pose_only": {"train_poses": "train_poses.npz"}}))
    info = _quiet(tree)
    assert info["splits"]["train_poses"] == {"file": "train_poses.npz", "count": 7, "pose_only": True,
                                             "subjects": ["S1"]}
    assert info["counts"]["train_poses"] == 7
    _info, arrays = idx.load_split(tree, "train_poses", "h36m")
    assert len(arrays["image"]) == 7
    logs = []
    _quiet(tree, log=logs.append)                                   # prepared in place: nothing changed
    assert any("up to date" in line for line in logs)
    # a changed pose-only file makes the next preparation rebuild
    np.savez(tree / "train_poses.npz", **_pose_only_arrays(9))
    assert _quiet(tree)["splits"]["train_poses"]["count"] == 9
