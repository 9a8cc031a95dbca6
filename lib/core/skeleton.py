"""Joint orders, bones and dataset constants for the two skeletons L2D uses.

Human3.6M-17 is the detector's native order (HRNet always predicts 17 maps);
CMU Panoptic-15 is reached from it by ``H36M_TO_PANOPTIC`` (docs/original.md#panoptic-heatmap-remapping).
"""
from dataclasses import dataclass
from typing import Tuple


@dataclass(frozen=True)
class Skeleton:
    name: str
    joint_names: Tuple[str, ...]
    bones: Tuple[Tuple[int, int], ...]          # (child, parent) pairs, for drawing and graphs
    flip_pairs: Tuple[Tuple[int, int], ...]     # (left/right) pairs
    root: int
    left_shoulder: int                          # PDJ torso diameter uses these two
    right_hip: int
    left_joints: Tuple[int, ...]
    right_joints: Tuple[int, ...]

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)


H36M = Skeleton(
    name="h36m",
    joint_names=("pelvis", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "spine",
                 "thorax", "neck", "head", "l_shoulder", "l_elbow", "l_wrist", "r_shoulder",
                 "r_elbow", "r_wrist"),
    bones=((1, 0), (2, 1), (3, 2), (4, 0), (5, 4), (6, 5), (7, 0), (8, 7), (9, 8), (10, 9),
           (11, 8), (12, 11), (13, 12), (14, 8), (15, 14), (16, 15)),
    flip_pairs=((3, 6), (2, 5), (1, 4), (16, 13), (15, 12), (14, 11)),
    root=0, left_shoulder=11, right_hip=1,
    left_joints=(4, 5, 6, 11, 12, 13), right_joints=(1, 2, 3, 14, 15, 16),
)

PANOPTIC = Skeleton(
    name="panoptic",
    joint_names=("neck", "nose", "mid_hip", "l_shoulder", "l_elbow", "l_wrist", "l_hip", "l_knee",
                 "l_ankle", "r_shoulder", "r_elbow", "r_wrist", "r_hip", "r_knee", "r_ankle"),
    bones=((12, 2), (13, 12), (14, 13), (6, 2), (7, 6), (8, 7), (0, 2), (1, 0), (3, 0), (4, 3),
           (5, 4), (9, 0), (10, 9), (11, 10)),
    flip_pairs=((14, 8), (13, 7), (12, 6), (11, 5), (10, 4), (9, 3)),
    root=2, left_shoulder=3, right_hip=12,
    left_joints=(3, 4, 5, 6, 7, 8), right_joints=(9, 10, 11, 12, 13, 14),
)

SKELETONS = {"h36m": H36M, "panoptic": PANOPTIC}

# Panoptic channel p is taken from H36M channel H36M_TO_PANOPTIC[p] (spine 7, head 10 dropped).
H36M_TO_PANOPTIC = (8, 9, 0, 11, 12, 13, 4, 5, 6, 14, 15, 16, 1, 2, 3)

# Human3.6M 32-joint annotation -> the 17 joints above.
H36M32_TO_17 = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)

# Per-action evaluation order and printed abbreviations (docs/original.md#per-action-breakdown,
# docs/original.md#printed-output).
H36M_ACTIONS = ("Directions", "Discussion", "Eating", "Greeting", "Phoning", "TakingPhoto",
                "Posing", "Purchases", "Sitting", "SittingDown", "Smoking", "Waiting",
                "WalkingDog", "Walking", "WalkingTogether")
H36M_ACTION_ABBR = ("Dir.", "Disc.", "Eat.", "Greet.", "Phone.", "Photo.", "Pose.", "Purch.",
                    "Sit.", "SitD.", "Smoke.", "Wait.", "WalkD.", "Walk.", "WalkT.")


def get_skeleton(dataset: str) -> Skeleton:
    try:
        return SKELETONS[dataset]
    except KeyError:
        raise KeyError(f"unknown dataset skeleton {dataset!r}; known: {sorted(SKELETONS)}") from None
