"""Training and evaluation engine: the L2D loop, validation, checkpoints, lifter training, run naming.

    from lib.engine import train, validate, train_lifter
    train(cfg, gpu_id=0)                      # run/train_hrnet.py
    results = validate(cfg, loader, detector, device, lifters, cross_lifters)   # SPEC §4
    train_lifter(cfg, "sb")                   # run/train_lifter.py
"""
from .checkpoint import atomic_save, load_checkpoint, rng_state, set_rng_state
from .evaluator import results_for_json, validate
from .lifter_trainer import train_lifter
from .run_dir import loss_type, run_dir
from .trainer import NonFiniteLossError, RunExistsError, lr_factor, train

__all__ = ["train", "validate", "train_lifter", "results_for_json", "run_dir", "loss_type", "lr_factor",
           "atomic_save", "load_checkpoint", "rng_state", "set_rng_state", "RunExistsError",
           "NonFiniteLossError"]
