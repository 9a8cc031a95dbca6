"""Run logging: ``<run_dir>/<cfg name>_<YYYY-mm-dd-HH-MM>_<phase>.log`` plus a console echo
(docs/original.md#run-folders-and-names).

Format ``"%(asctime)-15s %(message)s"`` as the original. Handlers are attached to the ``l2d``
logger (and thereby to ``lib.*``/``model_*`` loggers through the root); calling
:func:`setup_logger` again (tests call ``main`` several times in one process) replaces the file
handler instead of stacking duplicates.
"""
import logging
import sys
import time
from pathlib import Path

FORMAT = "%(asctime)-15s %(message)s"
_HANDLER_TAG = "_l2d_handler"


def log_file_name(cfg_name: str, phase: str = "train", when: float = None) -> str:
    """``w32_384x288_adam_lr1e-3_2024-05-01-12-00_train.log`` (cfg basename up to the first '.')."""
    stamp = time.strftime("%Y-%m-%d-%H-%M", time.localtime(when))
    base = (cfg_name or "run").split(".")[0]
    return f"{base}_{stamp}_{phase}.log"


def setup_logger(run_dir, cfg_name: str = "", phase: str = "train", console: bool = True,
                 enabled: bool = True):
    """-> (logger, log_path or None). ``enabled`` False (non-zero DDP ranks) logs nothing to file."""
    log = logging.getLogger("l2d")
    log.setLevel(logging.INFO)
    log.propagate = False
    root = logging.getLogger()
    for target in (log, root):
        for h in list(target.handlers):
            if getattr(h, _HANDLER_TAG, False):
                target.removeHandler(h)
                h.close()
    formatter = logging.Formatter(FORMAT)
    path = None
    handlers = []
    if enabled and run_dir is not None:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / log_file_name(cfg_name, phase)
        handlers.append(logging.FileHandler(path))
    if console and enabled:
        handlers.append(logging.StreamHandler(sys.stdout))
    for h in handlers:
        h.setFormatter(formatter)
        setattr(h, _HANDLER_TAG, True)
        log.addHandler(h)
        # library loggers (model_2d load reports, datasets) reach the same file and console
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
        root.addHandler(h)
    # 'l2d' does not propagate, so it is not written twice through the root handlers.
    return log, path


def close_logger():
    """Detach and close the handlers added by :func:`setup_logger` (end of a run)."""
    for target in (logging.getLogger("l2d"), logging.getLogger()):
        for h in list(target.handlers):
            if getattr(h, _HANDLER_TAG, False):
                target.removeHandler(h)
                h.close()
