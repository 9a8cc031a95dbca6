"""Per-lifter training recipes, as data for run/train_lifter.py (docs/weights.md#training-the-lifters).

Each ``LIFTER_RECIPES[name]`` is a dict:
  loss           'mse_zscore' (MSE on z-scored 3D, SimpleBaseline), 'mpjpe' (mean Euclidean joint
                 error, metres) or 'weighted_mpjpe' (the mean of ``joint_weights[j] x`` joint j's
                 Euclidean error, MixSTE's single-frame loss)
  joint_weights  per-dataset joint weights of 'weighted_mpjpe' ({dataset: J floats})
  loss_scaled_backward  back-propagate with the loss value as the upstream gradient (MixSTE's
                 ``loss.backward(loss.clone().detach())``: every gradient multiplied by the loss)
  train_kwargs   network keywords of the TRAINING network only (MixSTE: drop_path_rate 0.1); the
                 saved checkpoint records the sizes alone, so the evaluated network is built without
  epochs, lr, batch_size (int), batch_size_by_dataset (overrides), optimizer ('adam'/'adamw'),
  amsgrad, weight_decay
  lr_decay       {'gamma': g, 'exponent': x}: lr * g**(x * step / total_steps), set before every
                 optimizer step, so the whole run decays by g**x whatever its length
  flip_augment   train-time left/right flip of 2D input and 3D target, each sample with probability 1/2
  bn_momentum    None or (start, end): BN momentum annealed exponentially over the run's steps (VideoPose3D)
  bn_recalibrate re-estimate BN running statistics on the training set before each validation
  init_mean_pose initialise the output layer at the training mean pose (metre-regressing lifters)
  source         where the numbers come from

Schedules run over the optimizer steps of the whole run (:func:`lr_factor`, :func:`bn_momentum`),
so a short run (demo data, a few hundred steps) gets the official decay compressed into its length.
At the official scale they give the official values at the same EPOCHS: ``0.95**e`` (``0.99**e``
for MixSTE) at the start of epoch ``e``, and SimpleBaseline's ``0.96**(it / 100000)`` at iteration
``it``. An epoch here has ``H36M_REF_STEPS_PER_EPOCH`` = 1,524 steps on Human3.6M at batch 1024;
SimpleBaseline's official epoch has the same steps, but VideoPose3D, IGANet and MixSTE add a
mirrored copy of every frame, so their official epoch is 3,047 steps, where each sample here is
mirrored with probability 1/2 in one pass (the same share of mirrored samples in half the steps):
a run of their recipe's length has half their official optimizer steps (docs/differences.md).
Use :func:`get_recipe` for a copy with ``batch_size`` resolved for a dataset.
"""
import copy
import math

from lib.core.skeleton import H36M_TO_PANOPTIC

# VideoPose3D's Human3.6M training set: S1, S5, S6, S7, S8, 4 cameras, every frame (its log prints
# "Training on 1559752 frames"); at batch 1024 that is ceil(1559752 / 1024) optimizer steps per epoch.
H36M_REF_TRAIN_FRAMES = 1_559_752
H36M_REF_STEPS_PER_EPOCH = math.ceil(H36M_REF_TRAIN_FRAMES / 1024)   # 1524
# MixSTE's run.py joint weights of its weighted MPJPE (Human3.6M-17 order); MixSTE has no Panoptic
# code, so the Panoptic weights are those of the corresponding Human3.6M joints.
MIXSTE_JOINT_WEIGHTS_H36M = (1, 1, 2.5, 2.5, 1, 2.5, 2.5, 1, 1, 1, 1.5, 1.5, 4, 4, 1.5, 4, 4)
MIXSTE_JOINT_WEIGHTS = {"h36m": MIXSTE_JOINT_WEIGHTS_H36M,
                        "panoptic": tuple(MIXSTE_JOINT_WEIGHTS_H36M[h] for h in H36M_TO_PANOPTIC)}

_PLAIN = dict(joint_weights=None, loss_scaled_backward=False, train_kwargs={})
LIFTER_RECIPES = {
    "sb": dict(loss="mse_zscore", epochs=200, lr=1e-3, batch_size=1024, batch_size_by_dataset={},
               optimizer="adam", amsgrad=False, weight_decay=0.0,
               # official: 0.96 ** (iteration / 100000) over 200 epochs of 1524 steps
               lr_decay={"gamma": 0.96, "exponent": 200 * H36M_REF_STEPS_PER_EPOCH / 100000},
               flip_augment=False, bn_momentum=None, bn_recalibrate=False, init_mean_pose=False, **_PLAIN,
               source="SimpleBaseline tools/train_h36m.py / train_panoptic.py (docs/original.md#lifters-own-training)"),
    "videopose": dict(loss="mpjpe", epochs=60, lr=1e-3, batch_size=1024, batch_size_by_dataset={},
                      optimizer="adam", amsgrad=True, weight_decay=0.0,
                      lr_decay={"gamma": 0.95, "exponent": 60},      # x0.95 per epoch, 60 epochs
                      flip_augment=True, bn_momentum=(0.1, 0.001), bn_recalibrate=True, init_mean_pose=True,
                      **_PLAIN, source="VideoPose3D run.py (docs/original.md#lifters-own-training)"),
    "iganet": dict(loss="mpjpe", epochs=20, lr=1e-3, batch_size=1024, batch_size_by_dataset={"panoptic": 128},
                   optimizer="adam", amsgrad=True, weight_decay=0.0,
                   lr_decay={"gamma": 0.95, "exponent": 20},         # x0.95 per epoch, 20 epochs
                   flip_augment=True, bn_momentum=None, bn_recalibrate=False, init_mean_pose=True, **_PLAIN,
                   source="IGANet main.py / main_panoptic.py (docs/original.md#lifters-own-training)"),
    # L2D ships no MixSTE training code: MixSTE's own run.py at one frame. Its loss there is the weighted
    # MPJPE plus temporal terms, which are means over frame differences, of which one frame has none
    # (NaN), so they are left out; the backward is scaled by the loss value, as run.py does it. The
    # training network has drop-path 0.1 (its evaluation network, built from the checkpoint, none).
    "mixste": dict(loss="weighted_mpjpe", joint_weights=MIXSTE_JOINT_WEIGHTS, loss_scaled_backward=True,
                   train_kwargs={"drop_path_rate": 0.1}, epochs=120, lr=4e-5, batch_size=1024,
                   batch_size_by_dataset={}, optimizer="adamw", amsgrad=False, weight_decay=0.1,
                   lr_decay={"gamma": 0.99, "exponent": 120},        # x0.99 per epoch, 120 epochs
                   flip_augment=True, bn_momentum=None, bn_recalibrate=False, init_mean_pose=True,
                   source="MixSTE run.py and common/arguments.py defaults (not in the L2D code)"),
}


# The recipe of a lifter registered without one: VideoPose3D's (the plainest of the four: the MPJPE of
# the wrapper's metre output, which every normalisation gives, Adam with amsgrad at 1e-3, x0.95 per
# epoch over 60 epochs, flip augmentation); mean-pose initialisation only where the network's output
# layer can be found (model_3d.init.output_layer_name), BN re-estimation only where it has BN layers.
DEFAULT_RECIPE = dict(loss="mpjpe", epochs=60, lr=1e-3, batch_size=1024, batch_size_by_dataset={},
                      optimizer="adam", amsgrad=True, weight_decay=0.0,
                      lr_decay={"gamma": 0.95, "exponent": 60},
                      flip_augment=True, bn_momentum=None, bn_recalibrate=True, init_mean_pose=True,
                      **_PLAIN, source="the default recipe (VideoPose3D's; docs/weights.md#training-the-lifters)")


def set_recipe(name: str, recipe: dict) -> None:
    """Give lifter ``name`` a training recipe: ``recipe``'s keys over :data:`DEFAULT_RECIPE`'s."""
    unknown = sorted(set(recipe) - set(DEFAULT_RECIPE))
    if unknown:
        raise ValueError(f"recipe of lifter {name!r}: unknown key(s) {unknown}; the keys are {sorted(DEFAULT_RECIPE)}")
    LIFTER_RECIPES[name] = {**copy.deepcopy(DEFAULT_RECIPE), "source": f"registered with lifter {name!r}",
                            **copy.deepcopy(recipe)}


def get_recipe(name: str, dataset: str = "h36m") -> dict:
    """A deep copy of lifter ``name``'s recipe (:data:`DEFAULT_RECIPE` when it has none) with
    ``batch_size`` resolved for ``dataset``."""
    recipe = copy.deepcopy(LIFTER_RECIPES.get(name, DEFAULT_RECIPE))
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
