"""Per-lifter training recipes (SPEC §8), as data for run/train_lifter.py.

Each ``LIFTER_RECIPES[name]`` is a dict:
  loss           'mse_zscore' (MSE on z-scored 3D, SimpleBaseline) or 'mpjpe' (mean Euclidean, metres)
  epochs, lr, batch_size (int), batch_size_by_dataset (overrides), optimizer ('adam'/'adamw'),
  amsgrad, weight_decay
  lr_decay       {'per': 'epoch', 'gamma': g}  -> lr * g**epoch, stepped after every epoch
                 {'per': 'iteration', 'gamma': g, 'step': s} -> lr * g**(it / s), stepped every iteration
  flip_augment   train-time left/right flip of 2D input and 3D target
  bn_momentum    None or (start, end): BN momentum annealed exponentially over training (VideoPose3D)
  source         where the numbers come from
Use :func:`get_recipe` for a copy with ``batch_size`` resolved for a dataset.
"""
import copy

LIFTER_RECIPES = {
    "sb": dict(loss="mse_zscore", epochs=200, lr=1e-3, batch_size=1024, batch_size_by_dataset={},
               optimizer="adam", amsgrad=False, weight_decay=0.0,
               lr_decay={"per": "iteration", "gamma": 0.96, "step": 100000},
               flip_augment=False, bn_momentum=None,
               source="SPEC §8.1 (SimpleBaseline tools/train_*.py)"),
    "videopose": dict(loss="mpjpe", epochs=60, lr=1e-3, batch_size=1024, batch_size_by_dataset={},
                      optimizer="adam", amsgrad=True, weight_decay=0.0,
                      lr_decay={"per": "epoch", "gamma": 0.95},
                      flip_augment=True, bn_momentum=(0.1, 0.001),
                      source="SPEC §8.2 (VideoPose3D run.py)"),
    "iganet": dict(loss="mpjpe", epochs=20, lr=1e-3, batch_size=1024, batch_size_by_dataset={"panoptic": 128},
                   optimizer="adam", amsgrad=True, weight_decay=0.0,
                   lr_decay={"per": "epoch", "gamma": 0.95},
                   flip_augment=True, bn_momentum=None,
                   source="SPEC §8.3 (IGANet main.py / main_panoptic.py)"),
    # L2D ships no MixSTE training code; MixSTE's own run.py defaults (lr 4e-5, x0.99/epoch, AdamW wd 0.1,
    # 120 epochs, flip) with the plain MPJPE loss (its weighted/temporal terms vanish or change little at F=1).
    "mixste": dict(loss="mpjpe", epochs=120, lr=4e-5, batch_size=1024, batch_size_by_dataset={},
                   optimizer="adamw", amsgrad=False, weight_decay=0.1,
                   lr_decay={"per": "epoch", "gamma": 0.99},
                   flip_augment=True, bn_momentum=None,
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


def lr_factor(recipe: dict, epoch: int, iteration: int) -> float:
    """Multiplier of the initial lr after ``epoch`` finished epochs / ``iteration`` finished steps."""
    decay = recipe["lr_decay"]
    if decay["per"] == "iteration":
        return decay["gamma"] ** (iteration / decay["step"])
    return decay["gamma"] ** epoch
