"""Smoke tests of the benchmarks (tiny sizes, every JSON key present, the machine named; no timing
asserts) and of their shared timer (benchmarks/common.py)."""
import json
import math

import torch

from benchmarks import benchmark, common

TINY = "experiments/demo/tiny_96x128.yaml"
KEYS = ("step_ms_2d_only", "step_ms_guided_sb", "step_ms_guided_multi", "overhead_guided_sb", "decode_ms",
        "lifter_ms", "loader_samples_per_s", "valid_samples_per_s", "peak_mem_mb", "device", "machine", "batch", "config")


def _positive(value):
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_benchmark_json_has_every_key(tmp_path, capsys):
    missing_root = tmp_path / "not_prepared"
    res = benchmark.main(["--cfg", TINY, "--batch", "2", "--steps", "2", "--warmup", "0", "--device", "cpu",
                          "--json", "--json-out", str(tmp_path / "bench.json"), "--compare-original",
                          "--valid-batches", "1", "DATASET.ROOT", str(missing_root)])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads(json.dumps(res))
    written = json.loads((tmp_path / "bench.json").read_text())
    assert written.pop("benchmark") == "benchmark" and isinstance(written.pop("argv"), list)
    assert written == printed
    for key in KEYS:
        assert key in printed, key
    for key in ("step_ms_2d_only", "step_ms_guided_sb", "step_ms_guided_multi", "overhead_guided_sb",
                "decode_ms", "valid_samples_per_s", "peak_mem_mb"):
        assert _positive(printed[key]), (key, printed[key])
    assert set(printed["lifter_ms"]) == {"sb", "videopose", "iganet", "mixste"}
    assert all(_positive(v) for v in printed["lifter_ms"].values())
    assert printed["device"] == "cpu" and printed["batch"] == 2
    assert printed["machine"]["cpu"] and printed["machine"]["gpu"] is None     # figures name their machine
    assert printed["config"]["file"] == TINY
    assert printed["config"]["opts"] == ["DATASET.ROOT", str(missing_root)]
    # No prepared dataset and no --make-data: null with a note naming the root.
    assert printed["loader_samples_per_s"] is None
    assert any(str(missing_root) in note for note in printed["notes"])
    original = printed["original"]
    assert _positive(original["ratio_sb"]) and _positive(original["ratio_multi"])


def test_benchmark_profile_names_the_convolutions(capsys):
    res = benchmark.main(["--cfg", TINY, "--batch", "2", "--steps", "2", "--warmup", "0", "--device", "cpu",
                          "--profile", "--valid-batches", "1"])
    prof = res["profile"]
    ms = [r["ms_per_step"] for r in prof["ops"]]
    assert prof["clock"] == "cpu" and 0 < len(ms) <= 12 and ms == sorted(ms, reverse=True)
    assert 0 < sum(ms) <= prof["total_ms_per_step"] * (1 + 1e-9)
    assert any(r["op"] == "aten::convolution_backward" for r in prof["ops"])   # the detector's backward is there
    assert "2D-only step by operator (cpu time" in capsys.readouterr().out


def test_benchmark_make_data_times_the_loader(tmp_path, capsys):
    res = benchmark.main(["--cfg", TINY, "--batch", "2", "--steps", "1", "--warmup", "0", "--device", "cpu",
                          "--valid-batches", "1", "--loader-batches", "2", "--make-data",
                          "DATASET.ROOT", str(tmp_path / "absent")])
    out = capsys.readouterr().out
    assert "DataLoader" in out and "2D-only step" in out
    assert _positive(res["loader_samples_per_s"])
    assert not (tmp_path / "absent").exists()      # generated in a temporary folder, not at ROOT


def test_validation_benchmark_agrees_with_the_original_loops(tmp_path, capsys):
    # benchmarks/validation.py raises unless our evaluator and the original's per-sample loops
    # report the same PDJ / MPJPE / P-MPJPE; here on a small case, with the detector's cost included.
    from benchmarks import validation
    res = validation.main(["--cfg", TINY, "--batch", "6", "--batches", "2", "--lifters", "sb,videopose",
                           "--repeats", "1", "--with-detector", "--json", "--json-out", str(tmp_path / "v.json")])
    assert json.loads(capsys.readouterr().out.strip()) == json.loads(json.dumps(res))
    assert json.loads((tmp_path / "v.json").read_text())["pdj"] == res["pdj"]
    assert res["numbers_equal"] and set(res["mpjpe"]) == {"sb", "videopose"}
    assert _positive(res["speedup"]) and 0.0 <= res["pdj"] <= 100.0
    assert res["machine"]["cpu"] and res["machine"]["torch"] == torch.__version__


def test_decode_benchmark_rows_and_window_use(tmp_path, capsys):
    # benchmarks/decode.py: peaked maps all take the proven window, noise maps none; every row is
    # printed with its ratio to the original's loop (no timing is asserted).
    from benchmarks import decode
    res = decode.main(["--batch", "2", "--repeats", "2", "--json-out", str(tmp_path / "d.json")])
    out = capsys.readouterr().out
    assert out.startswith("machine: ")
    assert "proven exact on 34 of 34 maps" in out
    rows = {line[:34].strip(): float(line[34:].split()[0]) for line in out.splitlines() if "loop / this" in line}
    assert len(rows) == 6 and "memory floor (read + zeroed grad)" in rows and all(v > 0 for v in rows.values())
    written = json.loads((tmp_path / "d.json").read_text())
    assert written["benchmark"] == "decode" and written["machine"]["cpu"] and written["window_maps"] == 34
    assert set(written["ms"]) == set(rows) == set(res["ms"])
    decode.main(["--batch", "2", "--repeats", "1", "--maps", "noise"])
    assert "proven exact on 0 of 34 maps" in capsys.readouterr().out


def test_lifters_benchmark_json_out(tmp_path, capsys):
    from benchmarks import lifters
    res = lifters.main(["--batch", "2", "--repeats", "1", "--lifters", "sb", "videopose",
                        "--json-out", str(tmp_path / "l.json")])
    assert capsys.readouterr().out.startswith("machine: ")
    written = json.loads((tmp_path / "l.json").read_text())
    assert written["benchmark"] == "lifters" and written["machine"]["torch"] == torch.__version__
    assert set(written["ms"]) == {"sb", "videopose"} and all(_positive(v) for v in written["ms"].values())
    # SimpleBaseline's published size: 34 -> 1024, two residual blocks of two 1024 x 1024 layers,
    # five BatchNorms (weight and bias), 1024 -> 51
    sb_params = (34 * 1024 + 1024) + 4 * (1024 * 1024 + 1024) + 5 * 2 * 1024 + (1024 * 51 + 51)
    assert written["params"]["sb"] == res["params"]["sb"] == sb_params


def test_dataset_benchmark_matches_the_original_pipeline(tmp_path, capsys):
    # benchmarks/dataset.py compares one sample of our pipeline with the original's per-joint way
    # (benchmarks/reference.py: OpenCV affine, per-joint target loop) and writes the rows as JSON.
    from benchmarks import dataset
    from conftest import make_tiny_h36m
    root = make_tiny_h36m(tmp_path / "data", seed=3, frames_per_seq=2, image_size=128)
    capsys.readouterr()
    dataset.main(["--root", str(root), "-n", "4", "--workers", "0", "--json-out", str(tmp_path / "ds.json")])
    assert capsys.readouterr().out.startswith("machine: ")
    written = json.loads((tmp_path / "ds.json").read_text())
    assert written["benchmark"] == "dataset" and written["samples"] == 4
    assert set(written["samples_per_s"]) == {"dataset[i]", "DataLoader w0", "original way",
                                             "crop+target only, ours", "crop+target only, original"}
    assert all(_positive(v) for v in written["samples_per_s"].values())
    assert written["check"]["target_max_abs_diff"] <= 1e-6          # the same Gaussians
    assert written["check"]["image_mean_abs_diff"] < 1e-4           # the same crop up to float round-off


def test_timer_synchronises_the_timed_cuda_device(monkeypatch):
    # With --device cuda:1 the kernels run on device 1: synchronising the current device (0) would
    # time their launches only.
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    seen = []
    ms = common.Timer(torch.device("cuda:1"))(lambda: seen.append(list(calls)))
    assert seen == [[torch.device("cuda:1")]]                       # once before the call ...
    assert calls == [torch.device("cuda:1")] * 2 and ms >= 0        # ... and once after it
    calls.clear()
    common.Timer("cuda:0").median(lambda: None, steps=3, warmup=1)
    assert calls == [torch.device("cuda:0")] * 6
    calls.clear()
    common.Timer(torch.device("cpu"))(lambda: None)
    assert calls == []


def test_interleaved_turns_start_one_further_each_repeat():
    calls = []
    fns = {name: (lambda arg, name=name: calls.append((name, arg))) for name in "abc"}
    out = common.Timer(torch.device("cpu")).interleaved(fns, steps=4, warmup=1, prepare=str.upper)
    order = [name for name, _ in calls]
    assert order == list("abc" "abc" "bca" "cab" "abc")             # warm-up, then one step further each repeat
    assert all(arg == name.upper() for name, arg in calls)          # each call gets its own prepared argument
    assert set(out) == set("abc") and all(v >= 0 for v in out.values())
