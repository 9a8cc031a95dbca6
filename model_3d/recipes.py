"""Per-lifter training recipes (SPEC §8), as data for run/train_lifter.py.

Each ``LIFTER_RECIPES[name]`` is a dict:
  loss           'mse_zscore' (MSE on z-scored 3D, SimpleBaseline) or 'mpjpe' (mean Euclidean, metres)
  epochs, lr, batch_size (int), batch_size_by_dataset (overrides), optimizer ('adam'/'adamw'),
  amsgrad, weight_decay
  lr_decay       {'gamma': g, 'exponent': x}: lr * g**(x * step / total_steps), set before every
                 optimizer step, so the whole run decays by g**x whatever its length
  flip_augment   train-time left/right flip of 2D input and 3D target
  bn_momentum    None or (start, end): BN momentum annealed exponentially over the run's steps (VideoPose3D)
  bn_recalibrate re-estimate BN running statistics on the training set before each validation
  init_mean_pose initialise the output layer at the training mean pose (metre-regressing lifters)
  source         where the numbers come from

Schedules run over the optimizer steps of the whole run (:func:`lr_factor`, :func:`bn_momentum`).
The exponents are chosen so that on real Human3.6M at the official scale (``H36M_REF_STEPS_PER_EPOCH``
steps per epoch, the recipe's epochs) the official per-epoch / per-iteration values are reached at
the same steps: ``0.95**e`` at the start of epoch ``e``, ``0.96**(it / 100000)`` at iteration ``it``.
A short run (demo data, a few hundred steps) gets the same decay compressed into its length.
Use :func:`get_recipe` for a copy with ``batch_size`` resolved for a dataset.
"""
import copy
import math

# VideoPose3D's Human3.6M training set: S1, S5, S6, S7, S8, 4 cameras, every frame (its log prints
# "Training on 1559752 frames"); at batch 1024 that is ceil(1559752 / 1024) optimizer steps per epoch.
H36M_REF_TRAIN_FRAMES = 1_559_752
H36M_REF_STEPS_PER_EPOCH = math.ceil(H36M_REF_TRAIN_FRAMES / 1024)   # 1524

LIFTER_RECIPES = {
    "sb": dict(loss="mse_zscore", epochs=200, lr=1e-3, batch_size=1024, batch_size_by_dataset={},
               optimizer="adam", amsgrad=False, weight_decay=0.0,
               # official: 0.96 ** (iteration / 100000) over 200 epochs of 1524 steps
               lr_decay={"gamma": 0.96, "exponent": 200 * H36M_REF_STEPS_PER_EPOCH / 100000},
               flip_augment=False, bn_momentum=None, bn_recalibrate=False, init_mean_pose=False,
               source="SPEC §8.1 (SimpleBaseline tools/train_*.py)"),
    "videopose": dict(loss="mpjpe", epochs=60, lr=1e-3, batch_size=1024, batch_size_by_dataset={},
                      optimizer="adam", amsgrad=True, weight_decay=0.0,
                      lr_decay={"gamma": 0.95, "exponent": 60},      # x0.95 per epoch, 60 epochs
                      flip_augment=True, bn_momentum=(0.1, 0.001), bn_recalibrate=True, init_mean_pose=True,
                      source="SPEC §8.2 (VideoPose3D run.py)"),
    "iganet": dict(loss="mpjpe", epochs=20, lr=1e-3, batch_size=1024, batch_size_by_dataset={"panoptic": 128},
                   optimizer="adam", amsgrad=True, weight_decay=0.0,
                   lr_decay={"gamma": 0.95, "exponent": 20},         # x0.95 per epoch, 20 epochs
                   flip_augment=True, bn_momentum=None, bn_recalibrate=False, init_mean_pose=True,
                   source="SPEC §8.3 (IGANet main.py / main_panoptic.py)"),
    # L2D ships no MixSTE training code; MixSTE's own run.py defaults (lr 4e-5, x0.99/epoch, AdamW wd 0.1,
    # 120 epochs, flip) with the plain MPJPE loss (its weighted/temporal terms vanish or change little at F=1).
    "mixste": dict(loss="mpjpe", epochs=120, lr=4e-5, batch_size=1024, batch_size_by_dataset={},
                   optimizer="adamw", amsgrad=False, weight_decay=0.1,
                   lr_decay={"gamma": 0.99, "exponent": 120},        # x0.99 per epoch, 120 epochs
                   flip_augment=True, bn_momentum=None, bn_recalibrate=False, init_mean_pose=True,
                   source="MixSTE common/arguments.py defaults (not in the L2D code)"),
}


def get_recipe(name: str, dataset: str = "h36m") -> dict:
    """A deep copy of ``LIFTER_RECIPES[name]`` with ``batch_size`` resolved for ``dataset``."""
    if name not in LIFTER_RECIPES:
        raise KeyError(f"no training recipe for lifter {name!r}; recipes exist for {sorted(LIFTER_RECIPES)}. "
                       f"Add one: model_3d.LIFTER_RECIPES[{name!r}] = dict(loss='mpjpe', epochs=..., ...)")
    recipe = copy.deepcopy(LIFTER_RECIPES[name])
    recipe["batch_size"] = recipe["batch_size_by_dataset"].get(dataset, recipe["batch_size"])
    return recipe


def lr_factor(recipe: dict, step: int, total_steps: int) -> float:
    """Multiplier of the initial lr for optimizer step ``step`` (0-based) of a ``total_steps`` run.

    ``gamma ** (exponent * step / total_steps)``: continuous in the step, equal to the official
    per-epoch value at every epoch start when the run has the official length.
    """
    decay = recipe["lr_decay"]
    return float(decay["gamma"]) ** (float(decay["exponent"]) * step / max(int(total_steps), 1))


def bn_momentum(recipe: dict, step: int, total_steps: int, steps_per_epoch: int):
    """BatchNorm momentum for optimizer step ``step`` of the run, or None when the recipe has no schedule.

    VideoPose3D anneals ``start -> end`` exponentially over the epochs (``start * (end/start)**(e/E)``);
    here over the steps, so ``e/E`` becomes ``step/total_steps``. Floor: ``1 / steps_per_epoch`` (capped at
    ``start``), so the running statistics average over at most about one epoch of batches. At the
    official scale (1524 steps per epoch, floor 6.6e-4 < end) the floor never binds; with 13 steps per
    epoch it keeps the momentum near 0.077 instead of ending at 0.001, where the saved statistics would
    lag the weights by dozens of epochs.
    """
    if not recipe.get("bn_momentum"):
        return None
    start, end = (float(v) for v in recipe["bn_momentum"])
    annealed = start * (end / start) ** (step / max(int(total_steps), 1))
    return max(annealed, min(start, 1.0 / max(int(steps_per_epoch), 1)))
