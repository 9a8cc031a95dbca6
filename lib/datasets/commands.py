"""The data commands' arguments, in one place for ``run/`` and the reproduction pipeline.

``run/make_demo_data.py``, ``run/prepare_h36m.py`` and ``run/prepare_panoptic.py`` parse their
arguments with these parsers and call :func:`make_demo_data`, :func:`prepare_h36m_data` and
:func:`prepare_panoptic_data`; the pipeline passes a preset's ``PIPELINE.SYNTH_ARGS`` /
``PIPELINE.PREPARE_ARGS`` through the same parsers, so a preset's arguments mean what the
commands' do.
"""
import argparse
import json
from typing import Dict, Sequence

from lib.datasets.prepare_h36m import prepare_h36m
from lib.datasets.prepare_panoptic import TRAIN_SEQUENCES, VALID_SEQUENCES, prepare_panoptic
from lib.datasets.cameras import H36M_UNRELEASED_SUBJECTS
from lib.datasets.synthetic import TEST_SUBJECTS, make_h36m_demo, make_panoptic_demo, write_pose_only_split
from lib.utils.errors import BadValueError

DEMO_DOC = """Generate the small synthetic demo dataset (procedural people, real Human3.6M cameras).

    python run/make_demo_data.py --dst data/demo_h36m [--seed 0] [--frames-per-seq 30] [--image-size 256]
        [--held-out-actions 8] [--held-out-frames 40] [--test-split [--test-subjects S2,S3,S4,S10,S11]
        [--test-frames 10] [--pretrain-people 200]] [--lifter-poses N]
    python run/make_demo_data.py --dst data/demo_panoptic --panoptic

Human3.6M mode writes the anibali/h36m-fetch layout (processed/<S>/<Action>-1/annot.h5 and
imageSequence/<cam>/img_%06d.jpg) plus camera_parameters.json with the scaled intrinsics;
--panoptic writes the CMU panoptic-toolbox layout. Both write <dst>/preview.jpg.
"""

H36M_DOC = """Prepare Human3.6M for L2D: a versioned npz/json index per split plus normalisation stats.

    python run/prepare_h36m.py --src /data/h36m-fetch --dst data/h36m

--src: the h36m-fetch folder (holding processed/S*/<Action>-<n>/annot.h5) or processed/ itself, the
original L2D layout (S*/<action>/annot.pkl, img_%08d.jpg, camera_parameters.json), or the folder where
the official archives were extracted (S*/MyPoseFeatures/D2_Positions/*.cdf, D3_Positions[_mono]/*.cdf,
S*/Videos/*.mp4; needs cdflib): the kept frames are then decoded into <dst>/images.
Re-running with the same inputs is a no-op unless --force.
"""

PANOPTIC_DOC = """Prepare CMU Panoptic for L2D from the panoptic-toolbox layout: npz/json index per split + stats.

    python run/prepare_panoptic.py --src /data/panoptic --dst data/panoptic

--src holds <seq>/calibration_<seq>.json, <seq>/hdPose3d_stage1_coco19/body3DScene_*.json and
<seq>/hdImgs/00_XX/00_XX_<frame>.jpg. Re-running with the same inputs is a no-op unless --force.
"""


def _parser(doc: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def _split(text: str):
    return [x for x in text.split(",") if x]


def demo_parser() -> argparse.ArgumentParser:
    p = _parser(DEMO_DOC)
    p.add_argument("--dst", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames-per-seq", type=int, default=None,
                   help="frames per sequence and camera (h36m, default 30) / kept frames per sequence "
                        "(panoptic, default 12; 15x as many skeleton JSONs are written)")
    p.add_argument("--image-size", type=int, default=256,
                   help="h36m: images are the 1000-px frames scaled by image_size/1000 (256 -> 256x256 / 256x257)")
    p.add_argument("--actions-per-subject", type=int, default=2)
    p.add_argument("--held-out-actions", type=int, default=None,
                   help="h36m: actions of each held-out subject (S9, S11; default --actions-per-subject; "
                        "8 = every demo action, as Human3.6M's test subjects)")
    p.add_argument("--held-out-frames", type=int, default=None,
                   help="h36m: frames per held-out sequence and camera (default --frames-per-seq)")
    p.add_argument("--test-split", action="store_true",
                   help="h36m: S9 -> valid (checkpoint selection), the --test-subjects -> test (reported figures), "
                        "via <dst>/splits.json, which run/prepare_h36m.py reads")
    p.add_argument("--test-subjects", type=_split, default=list(TEST_SUBJECTS), metavar="S11,...",
                   help=f"h36m, with --test-split: comma-separated test subjects among S11 and the never-released "
                        f"{', '.join(H36M_UNRELEASED_SUBJECTS)} (their cameras are public; default S11)")
    p.add_argument("--test-frames", type=int, default=None,
                   help="h36m: frames per test sequence and camera (default --held-out-frames)")
    p.add_argument("--lifter-poses", type=int, default=0, metavar="N",
                   help="h36m: also write N image-free ground-truth poses of the training subjects (other takes, "
                        "same cameras) as the prepared split train_poses for the lifters")
    p.add_argument("--pretrain-people", type=int, default=0, metavar="N",
                   help="h36m, with --test-split: also render N other people (S101, S102, ...; their own bodies and "
                        "clothes) as the split pretrain, for the detector's 2D pre-training")
    p.add_argument("--pretrain-actions", type=int, default=2, help="h36m: actions of each pre-training person")
    p.add_argument("--pretrain-frames", type=int, default=4,
                   help="h36m: frames per pre-training sequence and camera")
    p.add_argument("--panoptic", action="store_true", help="write the CMU Panoptic layout instead")
    return p


def make_demo_data(args) -> Dict:
    if args.panoptic:
        summary = make_panoptic_demo(args.dst, seed=args.seed, kept_frames=args.frames_per_seq or 12)
    else:
        if not args.test_split and (args.test_subjects != list(TEST_SUBJECTS) or args.test_frames):
            raise BadValueError("--test-subjects / --test-frames shape the test split: add --test-split")
        summary = make_h36m_demo(args.dst, seed=args.seed, frames_per_seq=args.frames_per_seq or 30,
                                 image_size=args.image_size, actions_per_subject=args.actions_per_subject,
                                 held_out_actions=args.held_out_actions, held_out_frames=args.held_out_frames,
                                 test_split=args.test_split, test_subjects=args.test_subjects,
                                 test_frames=args.test_frames, pretrain_people=args.pretrain_people,
                                 pretrain_actions=args.pretrain_actions, pretrain_frames=args.pretrain_frames)
        if args.lifter_poses > 0:
            summary["lifter_poses"] = write_pose_only_split(
                args.dst, seed=args.seed, num_frames=args.lifter_poses, image_size=args.image_size,
                actions_per_subject=args.actions_per_subject)
    print(json.dumps(summary, indent=1))
    return summary


def h36m_parser() -> argparse.ArgumentParser:
    p = _parser(H36M_DOC)
    p.add_argument("--src", required=True, help="h36m-fetch folder (or its processed/), the L2D h36m folder, or "
                                                "the folder of the extracted official archives")
    p.add_argument("--dst", default="data/h36m", help="prepared dataset root (DATASET.ROOT)")
    p.add_argument("--cameras", default=None,
                   help="calibration json (shipped / karfly camera-parameters.json / L2D camera_parameters.json); "
                        "default: camera_parameters.json in --src if present, else the shipped one")
    p.add_argument("--train-interval", type=int, default=40, help="keep every Nth frame per camera (train)")
    p.add_argument("--valid-interval", type=int, default=100, help="keep every Nth frame per camera (valid)")
    p.add_argument("--test-interval", type=int, default=100,
                   help="keep every Nth frame per camera (test, where a splits.json plan names one)")
    p.add_argument("--splits", default="train,valid", help="comma-separated splits to prepare (train, valid, test)")
    p.add_argument("--no-check-images", dest="check_images", action="store_false",
                   help="skip reading every kept image for the black-frame test (missing files are still counted)")
    p.add_argument("--workers", type=int, default=None, help="threads for the image check")
    p.add_argument("--force", action="store_true", help="rebuild even if the index is up to date")
    p.add_argument("--trust", action="append", default=[], metavar="PATH",
                   help="an L2D annot.pkl (or a folder of them) you trust to be read with full pickle, which can "
                        "run code; repeatable. Without it annot.pkl files are read as plain data only")
    return p


def prepare_h36m_data(args) -> Dict:
    return prepare_h36m(args.src, args.dst, cameras=args.cameras, train_interval=args.train_interval,
                        valid_interval=args.valid_interval, test_interval=args.test_interval, splits=_split(args.splits),
                        check_images=args.check_images, force=args.force, workers=args.workers, trusted=args.trust)


def panoptic_parser() -> argparse.ArgumentParser:
    p = _parser(PANOPTIC_DOC)
    p.add_argument("--src", required=True, help="folder of panoptic-toolbox sequences")
    p.add_argument("--dst", default="data/panoptic", help="prepared dataset root (DATASET.ROOT)")
    p.add_argument("--interval", type=int, default=15, help="keep every Nth annotation file (train and valid)")
    p.add_argument("--train-seqs", default=",".join(TRAIN_SEQUENCES), help="comma-separated training sequences")
    p.add_argument("--valid-seqs", default=",".join(VALID_SEQUENCES), help="comma-separated validation sequences")
    p.add_argument("--splits", default="train,valid", help="comma-separated splits to prepare")
    p.add_argument("--no-check-images", dest="check_images", action="store_false",
                   help="skip reading every kept image for the black-frame test")
    p.add_argument("--workers", type=int, default=None, help="threads for the image check")
    p.add_argument("--force", action="store_true", help="rebuild even if the index is up to date")
    return p


def prepare_panoptic_data(args) -> Dict:
    return prepare_panoptic(args.src, args.dst, train_seqs=_split(args.train_seqs), valid_seqs=_split(args.valid_seqs),
                            interval=args.interval, splits=_split(args.splits), check_images=args.check_images,
                            force=args.force, workers=args.workers)


PREPARERS = {"h36m": (h36m_parser, prepare_h36m_data), "panoptic": (panoptic_parser, prepare_panoptic_data)}


def run_prepare(dataset: str, argv: Sequence[str]) -> Dict:
    """Prepare ``dataset`` (``h36m`` | ``panoptic``) with its command's arguments ``argv``."""
    parser, run = PREPARERS[dataset]
    return run(parser().parse_args([str(a) for a in argv]))


def run_make_demo_data(argv: Sequence[str]) -> Dict:
    """Generate the synthetic set with ``run/make_demo_data.py``'s arguments ``argv``."""
    return make_demo_data(demo_parser().parse_args([str(a) for a in argv]))
