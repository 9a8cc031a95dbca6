"""The common sample pipeline of L2D's datasets (docs/original.md#sample-pipeline), over a prepared index.

Shapes: ``N`` samples, ``J`` dataset joints (17 H36M, 15 Panoptic), ``(H, W)`` network input
(``MODEL.IMAGE_SIZE`` = (W, H)), ``(Hm, Wm)`` heatmap (``MODEL.HEATMAP_SIZE`` = (Wm, Hm)).

Per sample: GT box of all 2D joints padded by 7.5 % -> centre/scale (aspect fix, x1.25) -> affine crop
(bilinear, black border) -> RGB image normalised with the ImageNet mean/std -> Gaussian heatmap
targets and weights. Boxes, centres, scales, crop affines and crop-space joints are computed once for
the whole split at construction (vectorised), so ``__getitem__`` only decodes, warps and encodes.

Augmentation (scale, rotation, flip, half-body; HRNet's recipe) only when ``is_train`` and
``DATASET.AUGMENT`` (off by default: the original never augments, docs/original.md#quirks, quirk 27).

A missing or unreadable image never stops an epoch: it is reported once (one warning line per image
and process) and the next readable sample of the split is returned in its place.
"""
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from lib.core.skeleton import H36M_ACTIONS
from lib.core.transforms import (PIXEL_STD, affine_points, box_from_joints, box_to_center_scale,
                                 get_affine_transform)
from lib.datasets import index as idx
from lib.utils.safe_io import read_image

logger = logging.getLogger(__name__)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
MAX_SUBSTITUTIONS = 32          # consecutive unreadable images before giving up


def dataset_root(cfg):
    """``DATA_DIR`` joined with ``DATASET.ROOT`` (the original joins them the same way)."""
    return Path(os.path.join(cfg.DATA_DIR, cfg.DATASET.ROOT))


class JointsDataset3D(Dataset):
    """Prepared split -> (image (3,H,W) f32, target (J,Hm,Wm) f32, target_weight (J,1) f32, meta dict).

    meta: joints_2d (J,2) f32 px, joints_2d_vis (J,2) f32, joints_3d (J,3) f32 cm root-relative,
    center (2,) f32, scale (2,) f32, image_size (2,) f32 (width, height of the original image),
    width, height int, action str, action_idx int (index in H36M_ACTIONS or -1), subject, camera str,
    image str (full path), index int (the sample actually returned).
    """

    name = None          # registry / index dataset name
    skeleton = None      # lib.core.skeleton.Skeleton
    upper_body = ()      # joint ids for half-body augmentation
    lower_body = ()
    missing_images = 0             # samples left out at start because their image file is gone

    def __init__(self, cfg, split, is_train, root=None, transform=None):
        self.cfg = cfg
        self.split = split
        self.is_train = bool(is_train)
        self.root = Path(root) if root is not None else dataset_root(cfg)
        self.info, arrays = idx.load_split(self.root, split, self.name)
        if int(self.info["num_joints"]) != self.skeleton.num_joints:
            raise idx.DatasetIndexError(f"{self.root / idx.INDEX_FILE}: num_joints {self.info['num_joints']} "
                                        f"but the {self.name} skeleton has {self.skeleton.num_joints}")
        max_samples = int(cfg.DATASET.MAX_SAMPLES)
        if max_samples > 0:
            arrays = {k: v[:max_samples] for k, v in arrays.items()}
        if len(arrays["image"]) == 0:
            raise idx.DatasetIndexError(f"split {split!r} of {self.root} is empty; re-run "
                                        f"{idx.prepare_hint(self.name, self.root)} --force")
        self.image_root = idx.image_root(self.root, self.info)
        arrays = self._drop_missing_images(arrays)
        self.num_joints = self.skeleton.num_joints
        self.image_size = np.array(cfg.MODEL.IMAGE_SIZE, dtype=np.int64)          # (W, H)
        self.heatmap_size = np.array(cfg.MODEL.HEATMAP_SIZE, dtype=np.int64)      # (Wm, Hm)
        self.sigma = float(cfg.MODEL.SIGMA)
        self.aspect_ratio = float(self.image_size[0]) / float(self.image_size[1])
        self.color_rgb = bool(cfg.DATASET.COLOR_RGB)
        self.transform = transform
        self.augment = self.is_train and bool(cfg.DATASET.AUGMENT)
        self.scale_factor = float(cfg.DATASET.SCALE_FACTOR)
        self.rot_factor = float(cfg.DATASET.ROT_FACTOR)
        self.flip = bool(cfg.DATASET.FLIP)
        self.prob_half_body = float(cfg.DATASET.PROB_HALF_BODY)
        self.num_joints_half_body = int(cfg.DATASET.NUM_JOINTS_HALF_BODY)

        self.images = arrays["image"]
        self.joints_2d = arrays["joints_2d"].astype(np.float32)
        self.joints_vis = arrays["joints_vis"].astype(np.float32)
        self.joints_3d = arrays["joints_3d"].astype(np.float32)
        self.hip_camera = arrays["hip_camera"].astype(np.float32)
        self.width = arrays["width"].astype(np.int64)
        self.height = arrays["height"].astype(np.int64)
        self.actions = arrays["action"]
        self.subjects = arrays["subject"]
        self.cameras = arrays["camera"]
        self.frames = arrays["frame"]
        self.camera_params = {k: arrays[k] for k in ("cam_R", "cam_T", "cam_K", "cam_dist")}
        lookup = {a: i for i, a in enumerate(H36M_ACTIONS)}
        self.action_idx = np.array([lookup.get(a, -1) for a in self.actions.tolist()], dtype=np.int64)

        # Whole-split geometry, once (docs/original.md#sample-pipeline steps 2-4, 6).
        self.boxes = box_from_joints(self.joints_2d, self.width, self.height)
        self.centers, self.scales = box_to_center_scale(self.boxes, self.aspect_ratio)
        self.affines = get_affine_transform(self.centers, self.scales, 0.0, self.image_size)
        self.joints_crop = affine_points(self.joints_2d, self.affines).astype(np.float32)

        # DATASET.MASK_LOW_CONFIDENCE: 1 where the 3D annotation is real (meta['joints_3d_valid'])
        self.mask_low_confidence = bool(cfg.DATASET.MASK_LOW_CONFIDENCE)
        if self.mask_low_confidence and self.name == "panoptic" and "joints_3d_valid" not in arrays:
            raise idx.DatasetIndexError(
                f"DATASET.MASK_LOW_CONFIDENCE needs the per-joint confidence flags (joints_3d_valid) that "
                f"{self.root} lacks (prepared by an older version); re-run "
                f"{idx.prepare_hint(self.name, self.root)} --force")
        self.joints_3d_valid = (arrays["joints_3d_valid"].astype(np.float32)
                                if self.mask_low_confidence and "joints_3d_valid" in arrays
                                else np.ones(self.joints_vis.shape, np.float32))
        if self.mask_low_confidence:
            from lib.datasets.stats import train_stats
            self.stats = train_stats(cfg, self.root)
        else:
            self.stats = idx.load_stats(self.root)
        self._norm_scale = (1.0 / (255.0 * IMAGENET_STD)).astype(np.float32)
        self._norm_shift = (-IMAGENET_MEAN / IMAGENET_STD).astype(np.float32)
        self._rng, self._rng_pid = None, None
        self.bad_images = set()       # this process's unreadable images (workers keep their own)
        from lib.core.heatmap import encode_heatmaps   # teammate module; imported when a dataset is built
        self._encode = encode_heatmaps

    def _drop_missing_images(self, arrays):
        """Find a stale index when the run starts, not as a failed epoch: samples whose image file is
        gone are dropped with one warning (count, first paths, the fix); none left is an error."""
        rel = arrays["image"]
        listing = {}
        present = np.ones(len(rel), bool)
        for i, r in enumerate(rel.tolist()):      # one directory listing per folder, not one stat per file
            folder, _, name = str(r).rpartition("/")
            if folder not in listing:
                d = self.image_root / folder
                listing[folder] = set(os.listdir(d)) if d.is_dir() else set()
            present[i] = name in listing[folder]
        missing = int((~present).sum())
        if not missing:
            return arrays
        fix = f"re-run {idx.prepare_hint(self.name, self.root)} --force (or restore the images)"
        first = [str(self.image_root / r) for r in rel[~present][:3].tolist()]
        if missing == len(rel):
            raise idx.DatasetIndexError(f"none of the {missing} images of {self.name}/{self.split} exists under "
                                        f"{self.image_root} (e.g. {first[0]}): the images moved or the index is "
                                        f"stale; {fix}")
        logger.warning("%s/%s: %d of %d indexed images are missing (e.g. %s); those samples are left out of this "
                       "run. The index is stale: %s", self.name, self.split, missing, len(rel), ", ".join(first), fix)
        self.missing_images = missing
        return {k: v[present] for k, v in arrays.items()}

    # ------------------------------------------------------------------ helpers
    def __len__(self):
        return len(self.images)

    def image_path(self, i):
        return self.image_root / str(self.images[i])

    def _rng_here(self):
        # One generator per process, seeded from torch (per-worker seeds differ, main process follows SEED).
        if self._rng is None or self._rng_pid != os.getpid():
            self._rng = np.random.default_rng(torch.initial_seed() % (2 ** 63))
            self._rng_pid = os.getpid()
        return self._rng

    def read_image(self, i):
        """-> HxWx3 uint8 (RGB when DATASET.COLOR_RGB) or None (missing, unreadable or a JPEG cut short,
        which OpenCV would decode with a grey part; warned once per file)."""
        path = self.image_path(i)
        image, why = read_image(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if image is None:                      # checked before any colour conversion (docs/original.md#quirks, quirk 26)
            if str(path) not in self.bad_images:
                self.bad_images.add(str(path))
                logger.warning("unreadable or missing image %s (%s; sample %d of %s/%s): using another sample",
                               path, why, i, self.name, self.split)
            return None
        if self.color_rgb:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        return image

    def normalise(self, crop):
        """HxWx3 uint8 -> (3,H,W) float32 tensor: /255 then ImageNet mean/std, as ToTensor+Normalize."""
        if self.transform is not None:
            return self.transform(crop)
        # channel-first uint8 first, then one fused multiply-add into float32 (2.5x faster than HWC float)
        planes = np.ascontiguousarray(crop.transpose(2, 0, 1))
        out = np.empty(planes.shape, np.float32)
        np.multiply(planes, self._norm_scale[:, None, None], out=out)
        out += self._norm_shift[:, None, None]
        return torch.from_numpy(out)

    def summary(self):
        return {"dataset": self.name, "split": self.split, "samples": len(self),
                "unreadable_images_seen": len(self.bad_images), "missing_images_dropped": self.missing_images}

    # ------------------------------------------------------------------ augmentation
    def _half_body(self, joints, vis):
        ids = np.flatnonzero(vis > 0)
        upper = [j for j in self.upper_body if j in ids]
        lower = [j for j in self.lower_body if j in ids]
        rng = self._rng_here()
        chosen = upper if (rng.random() < 0.5 and len(upper) > 2) else lower
        if len(chosen) < 2:
            chosen = upper
        if len(chosen) < 2:
            return None
        pts = joints[chosen]
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        center = (lo + hi) / 2.0
        w, h = hi - lo
        if w > self.aspect_ratio * h:
            h = w / self.aspect_ratio
        elif w < self.aspect_ratio * h:
            w = h * self.aspect_ratio
        return center.astype(np.float32), (np.array([w, h]) / PIXEL_STD * 1.5).astype(np.float32)

    def _augment(self, i, image):
        rng = self._rng_here()
        joints, vis = self.joints_2d[i].copy(), self.joints_vis[i].copy()
        joints_3d, valid_3d = self.joints_3d[i].copy(), self.joints_3d_valid[i].copy()
        center, scale = self.centers[i].copy(), self.scales[i].copy()
        if (vis.sum() > self.num_joints_half_body and rng.random() < self.prob_half_body):
            hb = self._half_body(joints, vis)
            if hb is not None:
                center, scale = hb
        sf, rf = self.scale_factor, self.rot_factor
        scale = scale * np.clip(rng.standard_normal() * sf + 1.0, 1.0 - sf, 1.0 + sf)
        rot = float(np.clip(rng.standard_normal() * rf, -2 * rf, 2 * rf)) if rng.random() <= 0.6 else 0.0
        if self.flip and rng.random() <= 0.5:
            width = image.shape[1]
            image = image[:, ::-1]
            perm = np.arange(self.num_joints)
            for a, b in self.skeleton.flip_pairs:
                perm[a], perm[b] = b, a
            joints = joints[perm]
            joints[:, 0] = width - 1 - joints[:, 0]
            vis = vis[perm]
            # Mirroring the image ~ negating camera x (exact for a centred principal point): only for 2D
            # pre-training, where 3D is unused.
            joints_3d = joints_3d[perm] * np.array([-1.0, 1.0, 1.0], np.float32)
            valid_3d = valid_3d[perm]
            center = np.array([width - center[0] - 1, center[1]], np.float32)
        M = get_affine_transform(center, scale, rot, self.image_size)
        return image, M, affine_points(joints, M).astype(np.float32), joints, vis, joints_3d, valid_3d, center, scale

    # ------------------------------------------------------------------ sample
    def __getitem__(self, i):
        i = int(i)
        n = len(self)
        for attempt in range(min(MAX_SUBSTITUTIONS, n)):
            j = (i + attempt) % n
            image = self.read_image(j)
            if image is not None:
                return self.make_sample(j, image)
        raise RuntimeError(f"{min(MAX_SUBSTITUTIONS, n)} consecutive images of {self.name}/{self.split} from sample "
                           f"{i} ({self.image_path(i)}) are missing or unreadable; check {self.image_root} or "
                           f"re-run {idx.prepare_hint(self.name, self.root)} --force")

    def make_sample(self, i, image):
        """Sample ``i`` from its already decoded image (HxWx3 uint8)."""
        if self.augment:
            image, M, joints_crop, joints, vis, joints_3d, valid_3d, center, scale = self._augment(i, image)
        else:
            M, joints_crop = self.affines[i], self.joints_crop[i]
            joints, vis, joints_3d = self.joints_2d[i], self.joints_vis[i], self.joints_3d[i]
            valid_3d = self.joints_3d_valid[i]
            center, scale = self.centers[i], self.scales[i]
        W, H = int(self.image_size[0]), int(self.image_size[1])
        crop = cv2.warpAffine(np.ascontiguousarray(image), M, (W, H), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        target, target_weight = self._encode(joints_crop, vis, self.image_size, self.heatmap_size, self.sigma)
        width, height = int(self.width[i]), int(self.height[i])
        meta = {
            "image": str(self.image_path(i)),
            "joints_2d": np.asarray(joints, np.float32),
            "joints_2d_vis": np.repeat(np.asarray(vis, np.float32)[:, None], 2, axis=1),
            "joints_3d": np.asarray(joints_3d, np.float32),
            "joints_3d_valid": np.asarray(valid_3d, np.float32),
            "center": np.asarray(center, np.float32),
            "scale": np.asarray(scale, np.float32),
            "image_size": np.array([width, height], np.float32),
            "width": width, "height": height,
            "action": str(self.actions[i]), "action_idx": int(self.action_idx[i]),
            "subject": str(self.subjects[i]), "camera": str(self.cameras[i]),
            "index": i,
        }
        return (self.normalise(crop), torch.from_numpy(np.asarray(target, np.float32)),
                torch.from_numpy(np.asarray(target_weight, np.float32).reshape(self.num_joints, 1)), meta)
