"""Train a registered lifter on ground-truth 2D -> 3D pairs of the prepared dataset (SPEC §8).

Shapes: N samples, J dataset joints. 2D in original-image pixels, 3D root-relative camera frame
(cm in the prepared index, metres for the screen-normalised lifters' loss).

The recipe of each lifter comes from ``model_3d.LIFTER_RECIPES`` (loss, epochs, lr, batch size,
optimizer, decay, flip augmentation, BN-momentum schedule). Single frame (receptive field 1).

* ``mse_zscore`` (``sb``): MSE between the network's z-scored output and the z-scored 3D target,
  with the stats of the training split (``<DATASET.ROOT>/stats.npz``: 2D px, 3D cm), which are
  stored inside the checkpoint.
* ``mpjpe`` (``videopose``, ``iganet``, ``mixste``): mean Euclidean joint error in metres of the
  wrapper's output (screen-normalised input) against the root-relative target.
* flip augmentation (recipes with ``flip_augment``): each training sample is mirrored with
  probability 1/2: ``x -> w - x`` in pixels (``x_n -> -x_n`` after screen normalisation),
  ``X -> -X`` in 3D, left/right joints swapped.

Every epoch the GT-2D MPJPE / P-MPJPE (mm) on the valid split is computed; the best epoch is saved
as a self-contained ``l2d-lifter`` checkpoint at ``cfg.MODEL_3D.WEIGHTS.<NAME>`` or the default
``model_3d.default_weight_path(name, dataset)`` (where ``train_hrnet.py`` looks). A log,
``history.json`` and ``curves.png`` go to ``<OUTPUT_DIR>/<dataset>/lifters/<name>/``.

Config: ``LIFTER_TRAIN.EPOCHS`` / ``BATCH_SIZE`` / ``LR`` (<= 0: the recipe's value),
``LIFTER_TRAIN.MAX_STEPS_PER_EPOCH`` (> 0: quick runs), ``LIFTER_TRAIN.FLIP`` (off disables flip).
"""
import json
import math
import os
import time
from pathlib import Path
from typing import Dict

import numpy as np
import torch

from lib.eval.metrics import mpjpe_torch, p_mpjpe_torch

CM_PER_M = 100.0
MM_PER_CM = 10.0
PLOT_EVERY_S = 60.0


def _flip_perm(skeleton) -> torch.Tensor:
    perm = list(range(skeleton.num_joints))
    for a, b in skeleton.flip_pairs:
        perm[a], perm[b] = b, a
    return torch.tensor(perm, dtype=torch.long)


def flip_batch(pose_2d_px, image_size, pose_3d_cm, perm, mask):
    """Mirror the samples where ``mask`` (N,) is True: 2D ``x -> w - x``, 3D ``X -> -X``, joints swapped."""
    w = image_size[:, :1].unsqueeze(1)                                  # (N, 1, 1)
    f2 = pose_2d_px[:, perm].clone()
    f2[..., 0] = w[..., 0] - f2[..., 0]
    f3 = pose_3d_cm[:, perm].clone()
    f3[..., 0] = -f3[..., 0]
    m = mask.view(-1, 1, 1)
    return torch.where(m, f2, pose_2d_px), torch.where(m, f3, pose_3d_cm)


def _set_bn_momentum(net, momentum: float):
    for mod in net.modules():
        if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
            mod.momentum = momentum


def _load_arrays(root, split, dataset, max_samples, device):
    from lib.datasets import index as idx
    _info, arrays = idx.load_split(root, split, dataset)
    n = len(arrays["joints_2d"]) if max_samples <= 0 else min(max_samples, len(arrays["joints_2d"]))
    if n == 0:
        raise RuntimeError(f"split {split!r} of {root} is empty; re-run {idx.prepare_hint(dataset, root)}")
    size = np.stack([arrays["width"][:n], arrays["height"][:n]], axis=1).astype(np.float32)
    to = lambda a: torch.as_tensor(np.ascontiguousarray(a[:n]), dtype=torch.float32, device=device)  # noqa: E731
    return to(arrays["joints_2d"]), torch.as_tensor(size, device=device), to(arrays["joints_3d"])


@torch.no_grad()
def evaluate_lifter(lifter, pose_2d_px, image_size, pose_3d_cm, batch_size=4096) -> Dict[str, float]:
    """GT-2D MPJPE / P-MPJPE in mm over the given arrays (lifter's net in eval mode)."""
    was = lifter.net.training
    lifter.net.eval()
    err, perr = [], []
    for s in range(0, pose_2d_px.shape[0], batch_size):
        pred_mm = lifter(pose_2d_px[s:s + batch_size], image_size[s:s + batch_size]) * 1000.0
        gt_mm = pose_3d_cm[s:s + batch_size] * MM_PER_CM
        err.append(mpjpe_torch(pred_mm, gt_mm))
        perr.append(p_mpjpe_torch(pred_mm, gt_mm))
    lifter.net.train(was)
    return {"mpjpe": float(torch.cat(err).double().mean()), "p_mpjpe": float(torch.cat(perr).double().mean())}


def train_lifter(cfg, name: str, *, gpu_id: int = 0, out_path=None, log=None) -> Dict:
    """Train lifter ``name`` as configured.

    Returns ``{'path', 'best', 'history', 'baseline_mean_pose_mm', 'untrained_mm', 'run_folder'}``: the two
    references are the valid MPJPE (mm) of predicting the training mean pose and of the network before training.
    """
    import model_3d
    from lib.core.skeleton import get_skeleton
    from lib.datasets import index as idx
    from lib.datasets.base import dataset_root
    from lib.engine.checkpoint import plain
    from lib.utils.device import select_device
    from lib.utils.logger import close_logger, setup_logger
    from lib.utils.plots import plot_curves

    dataset = cfg.DATASET.DATASET
    skeleton = get_skeleton(dataset)
    J = skeleton.num_joints
    spec = model_3d.get_spec(name)
    recipe = model_3d.get_recipe(name, dataset)
    run_folder = Path(cfg.OUTPUT_DIR) / dataset / "lifters" / name
    own_log = log is None
    if own_log:
        log, _ = setup_logger(run_folder, (cfg.CFG_NAME or "lifter") + f"_{name}", "train_lifter")
    try:
        device = select_device(gpu_id, bool(cfg.USE_CUDA))
        seed = int(cfg.SEED)
        torch.manual_seed(seed)
        np.random.seed(seed)
        root = dataset_root(cfg)
        max_samples = int(cfg.DATASET.MAX_SAMPLES)
        x_tr, size_tr, y_tr = _load_arrays(root, cfg.DATASET.TRAIN_SET, dataset, max_samples, device)
        x_va, size_va, y_va = _load_arrays(root, cfg.DATASET.TEST_SET, dataset, max_samples, device)
        stats = idx.load_stats(root)
        if spec.normalization == "zscore" and stats is None:
            raise FileNotFoundError(f"{root}/stats.npz not found: lifter {name!r} needs normalisation stats; "
                                    f"re-run {idx.prepare_hint(dataset, root)}")
        lt = cfg.LIFTER_TRAIN
        epochs = int(lt.EPOCHS) if int(lt.EPOCHS) > 0 else int(recipe["epochs"])
        batch_size = int(lt.BATCH_SIZE) if int(lt.BATCH_SIZE) > 0 else int(recipe["batch_size"])
        lr0 = float(lt.LR) if float(lt.LR) > 0 else float(recipe["lr"])
        max_steps = int(lt.MAX_STEPS_PER_EPOCH)
        flip = bool(recipe["flip_augment"]) and bool(lt.FLIP)
        out_path = Path(out_path) if out_path else model_3d.lifter_weight_path(cfg, name)
        log.info("training lifter %s on %s GT 2D->3D: %d train / %d valid samples, %d epochs, batch %d, lr %g, "
                 "loss %s, flip %s, device %s -> %s (recipe: %s)", name, dataset, x_tr.shape[0], x_va.shape[0],
                 epochs, batch_size, lr0, recipe["loss"], flip, device, out_path, recipe["source"])

        lifter = model_3d.build_lifter(name, J, stats=stats if spec.normalization == "zscore" else None).to(device)
        for p in lifter.net.parameters():
            p.requires_grad_(True)
        params = [p for p in lifter.net.parameters()]
        opt_cls = torch.optim.AdamW if recipe["optimizer"] == "adamw" else torch.optim.Adam
        optimizer = opt_cls(params, lr=lr0, amsgrad=bool(recipe["amsgrad"]),
                            weight_decay=float(recipe["weight_decay"]))
        perm = _flip_perm(skeleton).to(device)
        gen = torch.Generator(device="cpu")
        gen.manual_seed(seed)

        # reference: predicting the training mean pose for every validation sample
        mean_pose_mm = y_tr.mean(dim=0, keepdim=True) * MM_PER_CM
        baseline = float(mpjpe_torch(mean_pose_mm.expand_as(y_va), y_va * MM_PER_CM).double().mean())
        log.info("reference: mean training pose -> valid MPJPE %.2f mm", baseline)
        untrained = evaluate_lifter(lifter, x_va, size_va, y_va)["mpjpe"]
        log.info("reference: untrained network (seed %d) -> valid MPJPE %.2f mm", seed, untrained)

        if recipe["loss"] == "mse_zscore" and spec.layout != "flat":
            raise ValueError(f"lifter {name!r}: loss 'mse_zscore' expects a 'flat' layout, got {spec.layout!r}")
        history = {"lifter": name, "dataset": dataset, "baseline_mean_pose_mm": baseline,
                   "untrained_mm": untrained, "epochs": []}
        last_plot = time.time()
        best = {"mpjpe": math.inf}
        iteration = 0
        n = x_tr.shape[0]
        for epoch in range(epochs):
            t0 = time.time()
            if recipe["bn_momentum"]:
                start, end = recipe["bn_momentum"]
                _set_bn_momentum(lifter.net, start * math.exp(-epoch / epochs * math.log(start / end)))
            lifter.net.train()
            order = torch.randperm(n, generator=gen).to(device)
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            seen = 0
            lr_now = lr0 * model_3d.lr_factor(recipe, epoch, iteration)
            for step, s in enumerate(range(0, n, batch_size)):
                if max_steps and step >= max_steps:
                    break
                lr_now = lr0 * model_3d.lr_factor(recipe, epoch, iteration)
                for g in optimizer.param_groups:
                    g["lr"] = lr_now
                idx_b = order[s:s + batch_size]
                x, size, y_cm = x_tr[idx_b], size_tr[idx_b], y_tr[idx_b]
                if flip:
                    mask = (torch.rand(x.shape[0], generator=gen) < 0.5).to(device)
                    x, y_cm = flip_batch(x, size, y_cm, perm, mask)
                if recipe["loss"] == "mse_zscore":
                    raw = lifter.net(lifter.normalize_input(x).reshape(x.shape[0], -1)).reshape(x.shape[0], J, 3)
                    target = (y_cm - lifter.mean_3d) / (lifter.std_3d + 1e-8)
                    loss = torch.mean((raw - target) ** 2)
                else:
                    pred_m = lifter(x, size)
                    loss = torch.linalg.vector_norm(pred_m - y_cm / CM_PER_M, dim=-1).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                iteration += 1
                loss_sum += loss.detach().double() * x.shape[0]
                seen += x.shape[0]
            metrics = evaluate_lifter(lifter, x_va, size_va, y_va)
            train_loss = float(loss_sum / max(seen, 1))
            if not math.isfinite(train_loss):
                raise RuntimeError(f"lifter {name}: non-finite training loss at epoch {epoch}; lower LIFTER_TRAIN.LR")
            is_best = metrics["mpjpe"] < best["mpjpe"]
            log.info("lifter %s epoch %d/%d: loss %.6f, valid MPJPE %.2f mm, P-MPJPE %.2f mm, lr %.3e, %.1fs%s",
                     name, epoch, epochs - 1, train_loss, metrics["mpjpe"], metrics["p_mpjpe"], lr_now,
                     time.time() - t0, "  (best)" if is_best else "")
            history["epochs"].append({"epoch": epoch, "lr": lr_now, "train": {"total": train_loss},
                                      "valid": dict(metrics), "best": bool(is_best)})
            if is_best:
                best = {**metrics, "epoch": epoch}
                config = plain({"lifter_train": dict(lt), "recipe": {k: v for k, v in recipe.items()},
                                "epochs": epochs, "batch_size": batch_size, "lr": lr0, "flip": flip,
                                "dataset_root": str(root), "cfg_file": cfg.get("CFG_FILE", "")})
                model_3d.save_lifter_checkpoint(out_path, lifter, name=name, num_joints=J, dataset=dataset,
                                                stats=lifter.stats, epoch=epoch, metrics=metrics, config=config)
            run_folder.mkdir(parents=True, exist_ok=True)
            tmp = run_folder / "history.json.tmp"
            tmp.write_text(json.dumps(history, indent=1))
            os.replace(tmp, run_folder / "history.json")
            # drawing costs ~0.3 s: at the end, and at most once a minute meanwhile (quick runs stay quick)
            if epoch == epochs - 1 or time.time() - last_plot > PLOT_EVERY_S:
                last_plot = time.time()
                try:
                    plot_curves(history, run_folder / "curves.png")
                except Exception as err:   # noqa: BLE001 - plots never stop training
                    log.warning("could not draw curves: %s", err)
        log.info("lifter %s: best epoch %s, valid MPJPE %.2f mm, P-MPJPE %.2f mm -> %s", name, best.get("epoch"),
                 best["mpjpe"], best.get("p_mpjpe", float("nan")), out_path)
        return {"path": out_path, "best": best, "history": history, "baseline_mean_pose_mm": baseline,
                "untrained_mm": untrained, "run_folder": run_folder}
    finally:
        if own_log:
            close_logger()
