"""The detector's 2D in the files lifter projects read, and this project's lifters on such files
(docs/detections.md).

* :func:`export_detections`: a trained detector's 2D joints for every prepared frame of the chosen
  subjects, cropped from the ground-truth boxes exactly as validation crops them, written as
  VideoPose3D's ``data_2d_h36m_<name>.npz`` (Human3.6M) or this project's Panoptic sibling
  (:mod:`lib.datasets.vp3d` for the layouts).
* :func:`write_export`: the same file from 2D already predicted (the pipeline's validation).
* :func:`evaluate_detections`: the lifters scored on a file's 2D, with the 3D of the prepared
  validation split or of VideoPose3D's ``data_3d_h36m.npz``.

Human3.6M: VideoPose3D reads row ``t - 1`` as frame ``t`` and needs at least as many rows as mocap
frames, so by default every (recording, camera) must hold every frame from 1 (a preparation with
``--valid-interval 1`` / ``--train-interval 1`` of those subjects); ``every_frame=False`` writes
the kept frames only, with their numbers in ``metadata['l2d']['frames']`` (read back here, but too
short for VideoPose3D's loader). CMU Panoptic is prepared every 15th frame by design: its file
always lists the frame numbers.
"""
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from lib.datasets import vp3d
from lib.datasets.cameras import H36M_IMAGE_SIZE
from lib.utils.errors import BadValueError


def _dataset_rows(dataset):
    """A prepared dataset or a ``Subset`` of one -> (the prepared dataset, its row indices)."""
    if hasattr(dataset, "indices") and hasattr(dataset, "dataset"):
        return dataset.dataset, np.asarray(dataset.indices, dtype=np.int64)
    return dataset, np.arange(len(dataset))


def write_export(cfg, out, poses: np.ndarray, base, rows: np.ndarray, *, every_frame: Optional[bool] = True,
                 source: str = "") -> Dict:
    """Predicted 2D of rows ``rows`` of prepared dataset ``base`` -> the export file ``out``; -> a summary.

    ``poses`` (len(rows), J, 2 or 3) in full-frame pixels, the rows' order. ``every_frame``
    (Human3.6M): True refuses, naming the gaps, unless every recording and camera holds every frame
    from 1; False writes the kept frames with their numbers; None the first when possible, else the second.
    """
    dataset = cfg.DATASET.DATASET
    subjects, images = base.subjects[rows], base.images[rows]
    cameras, frames = base.cameras[rows], base.frames[rows]
    sequences = vp3d.sequence_names(dataset, subjects, images)
    if dataset == "h36m":
        order, every = vp3d.VP3D_CAMERAS, every_frame
    else:
        order, every = tuple(sorted(set(cameras.tolist()))), False
    arranged = vp3d.arrange(poses, subjects, sequences, cameras, frames, order, every is not False)
    if arranged.gaps and every is None:
        every = False
        arranged = vp3d.arrange(poses, subjects, sequences, cameras, frames, order, False)
    every = every is not False
    if arranged.gaps:
        raise vp3d.DetectionsFileError(
            f"not every frame of {len(arranged.gaps)} recording(s) is prepared ({'; '.join(arranged.gaps[:3])}"
            f"{' ...' if len(arranged.gaps) > 3 else ''}): VideoPose3D reads row t - 1 as frame t. Prepare those "
            f"subjects with --valid-interval 1 / --train-interval 1 (docs/detections.md#export), or export the kept "
            f"frames only with --kept_frames")
    sizes = {}
    for cam, w, h in zip(cameras.tolist(), base.width[rows].tolist(), base.height[rows].tolist()):
        sizes.setdefault(cam, [int(w), int(h)])
    extra = {}
    if dataset == "h36m" and any(tuple(v) != H36M_IMAGE_SIZE.get(c) for c, v in sizes.items()):
        extra["note"] = ("image sizes differ from Human3.6M's (synthetic data?): VideoPose3D normalises with its "
                         "own camera resolutions (1000 x 1000 / 1002)")
    meta = vp3d.metadata_for(vp3d.DATASET_LAYOUT[dataset], dataset=dataset, cameras=list(order), every_frame=every,
                             frames=arranged.frames, image_size=sizes, channels="xyc" if poses.shape[-1] == 3 else "xy",
                             source=str(source), subjects=sorted(set(subjects.tolist())), **extra)
    path = vp3d.write_npz(out, positions_2d=arranged.positions, metadata=meta)
    return {"path": str(path), "subjects": meta["l2d"]["subjects"], "rows": int(len(rows)),
            "recordings": sum(len(a) for a in arranged.positions.values()), "every_frame": every,
            "layout": meta["layout_name"], "channels": meta["l2d"]["channels"]}


def export_from_results(cfg, out, results: Dict, dataset, source: str = "") -> Optional[Dict]:
    """The export of :func:`lib.engine.evaluator.validate`'s ``pred_2d`` over ``dataset`` (the loader's),
    with every frame when the split holds every frame and the kept frames otherwise; ``{'path': None,
    'error'}`` when the rows cannot be named in the format."""
    base, rows = _dataset_rows(dataset)
    poses = results["pred_2d"]
    try:
        return write_export(cfg, out, poses, base, rows, every_frame=None, source=source)
    except vp3d.DetectionsFileError as err:    # e.g. a recording without a Human3.6M name: no file, say why
        return {"path": None, "error": str(err)}


@torch.no_grad()
def export_detections(cfg, model_file, out, subjects: Optional[Sequence[str]] = None, *, confidence: bool = False,
                      every_frame: bool = True, gpu_id: int = 0) -> Dict:
    """``run/export_detections.py``: the detector ``model_file``'s 2D for every prepared frame of
    ``subjects`` (default: those of DATASET.TEST_SET), through validation's crops and decoding
    (:func:`lib.engine.evaluator.predict_2d` with TEST.SOFT_ARGMAX, TEST.BETA). ``confidence`` adds
    each joint's heatmap maximum as a third channel. -> the summary of :func:`write_export`."""
    from lib.datasets import build_dataset
    from lib.datasets import index as idx
    from lib.datasets.base import dataset_root
    from lib.engine.builders import load_detector, make_loader
    from lib.engine.evaluator import predict_2d
    from lib.utils.device import select_device

    device = select_device(gpu_id, bool(cfg.USE_CUDA))
    info = idx.read_index(dataset_root(cfg), cfg.DATASET.DATASET)
    splits = list(info["splits"])
    model = load_detector(cfg, model_file, device).eval()
    chosen = None if subjects is None else {s.strip() for s in subjects if s.strip()}
    poses, bases = [], []
    for split in ([cfg.DATASET.TEST_SET] if chosen is None else splits):
        ds = build_dataset(cfg, split, False)
        rows = np.arange(len(ds)) if chosen is None else np.flatnonzero(np.isin(ds.subjects, sorted(chosen)))
        if not len(rows):
            continue
        loader = make_loader(ds, cfg.TEST.BATCH_SIZE_PER_GPU, rows.tolist(), cfg, device)
        out_rows = []
        for images, _t, _w, meta in loader:
            joints, conf = predict_2d(cfg, model, images, meta, device, soft_argmax=bool(cfg.TEST.SOFT_ARGMAX),
                                      beta=float(cfg.TEST.BETA), confidence=True)
            out_rows.append(torch.cat([joints, conf[..., None]], -1) if confidence else joints)
        poses.append(torch.cat(out_rows).float().cpu().numpy())
        bases.append((ds, rows))
    if not bases:
        have = sorted({s for split in splits for s in info["splits"][split].get("subjects", [])})
        raise BadValueError(f"--subjects {sorted(chosen)}: none is in the prepared dataset {dataset_root(cfg)} "
                            f"(it holds {have})")
    if len(bases) == 1:
        (base, rows), pose = bases[0], poses[0]
    else:                    # subjects of several splits: one view over them
        base, pose = _Rows(bases), np.concatenate(poses)
        rows = np.arange(len(pose))
    return write_export(cfg, out, pose, base, rows, every_frame=every_frame, source=str(model_file))


class _Rows:
    """The columns :func:`write_export` reads, joined over several prepared splits."""

    def __init__(self, parts):
        for name in ("subjects", "images", "cameras", "frames", "width", "height"):
            setattr(self, name, np.concatenate([getattr(ds, name)[rows] for ds, rows in parts]))


# ----------------------------------------------------------------------------- import
def evaluate_detections(cfg, path, *, data_3d: str = "", subjects: Optional[Sequence[str]] = None,
                        gpu_id: int = 0) -> Dict:
    """Score the lifters of MODEL_3D.NAMES on the 2D of file ``path``: with the 3D of the prepared
    validation split (every row must be in the file) or, with ``data_3d``, VideoPose3D's
    ``data_3d_h36m.npz`` for ``subjects`` (default: those of S9, S11 the 3D file holds). -> (:func:`validate`'s
    result plus ``detections``, ``data_3d``, ``layout``, ``subjects``; the lifters)."""
    from lib.datasets.base import dataset_root
    from lib.datasets.prepare_h36m import VALID_SUBJECTS
    from lib.datasets.stats import train_stats
    from lib.engine.builders import build_lifter_sets
    from lib.engine.evaluator import validate_arrays
    from lib.utils.device import select_device

    det = vp3d.read_detections(path, list(cfg.TRUSTED_FILES))
    root = dataset_root(cfg)
    if data_3d:
        if cfg.DATASET.DATASET != "h36m":
            raise BadValueError("--data_3d reads VideoPose3D's Human3.6M 3D; DATASET.DATASET is "
                                f"{cfg.DATASET.DATASET!r}")
        positions_3d = vp3d.read_data_3d(data_3d, list(cfg.TRUSTED_FILES))
        subjects = list(subjects or [s for s in VALID_SUBJECTS if s in positions_3d] or VALID_SUBJECTS)
        arrays = vp3d.vp3d_split(det, positions_3d, subjects)
        stats = train_stats(cfg, root) if (root / "stats.npz").is_file() else None
    else:
        arrays = vp3d.prepared_split_2d(root, cfg.DATASET.TEST_SET, cfg.DATASET.DATASET, det,
                                        int(cfg.DATASET.MAX_SAMPLES))
        if not arrays["found"].all():
            raise vp3d.DetectionsFileError(vp3d.missing_rows_message(det, arrays, arrays["found"],
                                                                     f"split {cfg.DATASET.TEST_SET!r} of {root}"))
        stats = train_stats(cfg, root)
    device = select_device(gpu_id, bool(cfg.USE_CUDA))
    lifters, _, _ = build_lifter_sets(cfg, stats, cross=False, device=device)
    results = validate_arrays(cfg, arrays, arrays["pred_2d"], device, lifters, ensemble=bool(cfg.TEST.ENSEMBLE),
                              action_valid=bool(cfg.TEST.ACTION_VALID))
    results.update(detections=str(path), data_3d=str(data_3d or ""), layout=det.layout,
                   subjects=sorted(set(arrays["subject"].tolist())))
    return results, lifters


__all__ = ["export_detections", "export_from_results", "evaluate_detections", "write_export"]
