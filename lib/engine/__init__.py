"""Training and evaluation engine: the L2D loop, validation, checkpoints, lifter training, run naming.

    from lib.engine import train, validate, evaluate_checkpoint, train_lifter
    train(cfg, gpu_id=0)                      # run/train_hrnet.py
    results = evaluate_checkpoint(cfg, "model_best.pth")   # run/valid_hrnet.py, the pipeline
    train_lifter(cfg, "sb")                   # run/train_lifter.py

Builders of loaders, detectors, lifter sets and optimizers: :mod:`lib.engine.builders`.
"""
from .checkpoint import load_checkpoint, rng_state, set_rng_state
from .evaluator import EvalContext, evaluate_checkpoint, evaluation_context, results_for_json, validate
from .lifter_trainer import train_lifter
from .run_dir import loss_type, run_dir
from .train_epoch import NonFiniteLossError
from .trainer import RunExistsError, train

__all__ = ["train", "validate", "evaluate_checkpoint", "evaluation_context", "EvalContext", "train_lifter",
           "results_for_json", "run_dir", "loss_type", "load_checkpoint", "rng_state", "set_rng_state",
           "RunExistsError", "NonFiniteLossError"]
