"""Dataset registry: ``build_dataset(cfg, split, is_train)`` -> the class registered for ``DATASET.DATASET``.

Each dataset reads a prepared root (``run/prepare_<dataset>.py``, layout in :mod:`lib.datasets.index`).
"""
DATASETS = {}


def register_dataset(name):
    """Class decorator: ``@register_dataset('h36m')`` makes the class reachable by ``build_dataset``."""
    def deco(cls):
        if name in DATASETS and DATASETS[name] is not cls:
            raise KeyError(f"dataset {name!r} registered twice ({DATASETS[name].__name__}, {cls.__name__})")
        DATASETS[name] = cls
        return cls
    return deco


def build_dataset(cfg, split, is_train, root=None, transform=None):
    """cfg.DATASET.DATASET names the class; ``split`` is the prepared split ('train', 'valid' or
    cfg.DATASET.TRAIN_SET / TEST_SET); the root is ``DATA_DIR``/``DATASET.ROOT`` unless given."""
    name = cfg.DATASET.DATASET
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r} (DATASET.DATASET); known: {sorted(DATASETS)}")
    return DATASETS[name](cfg, split, is_train, root=root, transform=transform)


from lib.datasets import h36m as _h36m, panoptic as _panoptic  # noqa: E402,F401  (register the built-ins)
