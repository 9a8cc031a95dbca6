"""The two caches of lib.engine.builders. TEST.CACHE_MB: the validation loader's first complete
pass is replayed by later passes (ReplayLoader). TRAIN.CACHE_MB: an un-augmented training split's
samples are kept after their first read (SampleCache). Checked by counting the dataset's reads, and
by validating a detector with and without the cache: the same numbers, bit for bit (the training
run with and without TRAIN.CACHE_MB: tests/test_e2e.py)."""
import logging

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from lib.engine.builders import ReplayLoader, SampleCache, train_dataset_view, valid_loader

from conftest import make_tiny_h36m


class CountingSet(Dataset):
    """Sample i is (a 4x4 tensor filled with i, {'index': i, 'name': str}); counts its reads."""

    def __init__(self, n):
        self.n, self.reads = n, 0

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.reads += 1
        return torch.full((4, 4), float(i)), {"index": torch.tensor(i), "name": f"s{i}"}


def _passes(loader, k):
    return [[b[0].clone() for b in loader] for _ in range(k)]


def test_second_pass_replays_the_first():
    data = CountingSet(10)
    loader = ReplayLoader(DataLoader(data, batch_size=4), max_mb=1)
    first, second = _passes(loader, 2)
    assert data.reads == 10                      # read once, replayed once
    assert len(first) == len(second) == len(loader) == 3
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert torch.equal(second[2], torch.arange(8, 10).float()[:, None, None].expand(2, 4, 4))
    assert loader.dataset is data                # the wrapped loader's attributes show through


def test_pass_over_budget_or_stopped_early_keeps_nothing():
    data = CountingSet(10)                       # 10 samples of 16 floats + an int64: 680 bytes
    small = ReplayLoader(DataLoader(data, batch_size=4), max_mb=600 / 2 ** 20)
    _passes(small, 2)
    assert data.reads == 20 and small.batches is None

    data = CountingSet(10)
    loader = ReplayLoader(DataLoader(data, batch_size=4), max_mb=1)
    for _ in loader:
        break                                    # validate(max_batches=...) stops like this
    assert loader.batches is None
    _passes(loader, 2)
    assert data.reads == 4 + 10


def test_validation_through_the_cache_equals_reading(tmp_path):
    """validate() on a prepared split: three passes through the cache give the numbers of a
    plain loader exactly, and the split's samples are cut once."""
    from benchmarks.common import build_lifters
    from lib.config import load_cfg
    from lib.datasets import build_dataset
    from lib.engine.builders import build_detector
    from lib.engine.evaluator import validate

    root = make_tiny_h36m(tmp_path / "h36m", seed=3)
    cfg = load_cfg("experiments/demo/tiny_96x128.yaml", ["DATASET.ROOT", str(root), "TEST.BATCH_SIZE_PER_GPU", "4"])
    assert float(cfg.TEST.CACHE_MB) > 0
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model = build_detector(cfg, logging.getLogger("t"))
    lifters = build_lifters(["sb"], 17, cpu)
    dataset = build_dataset(cfg, cfg.DATASET.TEST_SET, False)
    reads = []
    get = dataset.__class__.__getitem__
    dataset.__class__.__getitem__ = lambda self, i: (reads.append(i), get(self, i))[1]
    try:
        cached = valid_loader(cfg, dataset, cpu)
        assert isinstance(cached, ReplayLoader)
        runs = [validate(cfg, cached, model, cpu, lifters) for _ in range(3)]
        assert sorted(reads) == list(range(len(dataset)))
        plain = validate(cfg, valid_loader(load_cfg("experiments/demo/tiny_96x128.yaml", [
            "DATASET.ROOT", str(root), "TEST.BATCH_SIZE_PER_GPU", "4", "TEST.CACHE_MB", "0"]), dataset, cpu),
            model, cpu, lifters)
    finally:
        dataset.__class__.__getitem__ = get
    for key in ("mpjpe", "p_mpjpe", "pdj"):
        assert all(r[key] == plain[key] for r in runs), key
    assert plain["num_samples"] == len(dataset) > 4


def test_sample_cache_reads_each_index_once():
    data = CountingSet(10)
    cache = SampleCache(data, max_mb=1)
    order = [3, 1, 3, 0, 1, 3]
    samples = [cache[i] for i in order]
    assert data.reads == 3                       # 3, 1 and 0, each once
    assert all(torch.equal(s[0], torch.full((4, 4), float(i))) for s, i in zip(samples, order))
    assert [int(s[1]["index"]) for s in samples] == order and samples[5][1]["name"] == "s3"
    assert len(cache) == 10 and cache.n == 10    # the wrapped set's length and attributes show through
    batches = [b[0] for b in DataLoader(cache, batch_size=4)]   # collation copies: the kept samples stay
    batches[0].zero_()
    assert torch.equal(cache[1][0], torch.ones(4, 4))


def test_sample_cache_keeps_what_fits_and_reads_the_rest_each_time():
    data = CountingSet(10)                       # a sample's tensor: 16 floats = 64 bytes
    cache = SampleCache(data, max_mb=150 / 2 ** 20)
    for _ in range(3):
        for i in range(4):
            cache[i]
    assert sorted(cache.slot_of) == [0, 1] and cache.capacity == 2 and cache.nbytes == 128
    assert data.reads == 4 + 2 * 2               # 0 and 1 once, 2 and 3 at every pass


def test_sample_cache_reads_samples_of_another_shape_each_time():
    class DictSet(CountingSet):
        def __getitem__(self, i):
            image, meta = super().__getitem__(i)
            return {"image": image, **meta}

    data = DictSet(3)
    cache = SampleCache(data, max_mb=1)
    assert [int(cache[i]["index"]) for i in (0, 0, 1)] == [0, 0, 1] and data.reads == 3


def test_train_dataset_view_only_caches_unaugmented_splits(caplog):
    from lib.config import load_cfg

    class Split(CountingSet):
        augment = False

    cfg = load_cfg("experiments/demo/tiny_96x128.yaml", ["TRAIN.CACHE_MB", "64"])
    plain = Split(4)
    assert isinstance(train_dataset_view(plain, cfg), SampleCache)
    plain.augment = True
    with caplog.at_level(logging.INFO):
        assert train_dataset_view(plain, cfg, logging.getLogger("t")) is plain
    assert "TRAIN.CACHE_MB 64 unused: DATASET.AUGMENT" in caplog.text
    plain.augment = False
    assert train_dataset_view(plain, load_cfg("experiments/demo/tiny_96x128.yaml", ["TRAIN.CACHE_MB", "0"])) is plain
