"""The rows of ``benchmarks/gpu_check.sh`` (run that script; it prepares the data and calls this).

On a prepared (synthetic) dataset at ``--data``, in this order:

* ``lifters``: ``run/train_lifter.py`` trains the four registered lifters for one epoch of
  ``--lifter-steps`` steps into ``<work>/lifters`` (the guided rows need weights);
* ``train_<2d|sb|multi>_<fp32|bf16|bf16_cl>``: ``run/train_hrnet.py --epochs 0`` (one epoch) of
  ``1 + windows x window_steps`` steps (``TRAIN.MAX_STEPS_PER_EPOCH``), 2D-only, guided by sb and
  guided by all four lifters, in fp32, ``TRAIN.AMP bf16`` and bf16 with ``TRAIN.CHANNELS_LAST``:
  the real training loop (data loader, objective, optimizer, the end-of-epoch validation and
  checkpoints), run in this process so that the device's peak memory can be read per row;
* ``torchrun_sb_fp32``: the guided-by-sb fp32 row again under ``torchrun --standalone
  --nproc_per_node=1`` (``python -m torch.distributed.run``), in its own process;
* ``validation``: ``benchmarks/validation.py`` (our evaluator against the original's per-sample
  loops; it stops with an error unless both give the same PDJ / MPJPE / P-MPJPE);
* ``loader``: the training DataLoader with the config's own WORKERS / PIN_MEMORY / PREFETCH_FACTOR
  (``time_loader`` of ``benchmarks/benchmark.py``).

Step times come from the training log: the trainer logs ``Speed <x> samples/s`` at step 0 and
every PRINT_FREQ (= ``--window-steps``) steps after it, each over the steps since the previous
line, so the lines after the first cover ``--windows`` windows of equal length without the first
step (cuDNN autotuning, worker start-up): ``step_ms`` is their mean time per step and
``samples_per_s`` the batch over it. ``first_step_s`` is the first line's time, ``epoch_*`` the
epoch's figures in ``history.json`` (first step included), ``wall_s`` the whole command (with
model building, validation and checkpoints). ``peak_mem_mb`` is ``torch.cuda.max_memory_allocated``
per row on a GPU; on the CPU (``--dry``) the process's peak resident set so far.

Writes one JSON (``--json-out``) with the GPU's name (``torch.cuda.get_device_name`` and
``nvidia-smi``), the machine, the settings and every row, and prints a table. Exits with 1 when a
row failed (the others still run).
"""
import argparse
import gc
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Dict, List, Optional

if __package__ in (None, ""):  # `python benchmarks/gpu_check.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import model_3d  # noqa: E402
from benchmarks.common import peak_memory_mb, write_json_out  # noqa: E402
from lib.utils.machine import machine_info, machine_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = {"fp32": ("none", False), "bf16": ("bf16", False), "bf16_cl": ("bf16", True)}
GUIDANCE = {"2d": [], "sb": ["sb"], "multi": sorted(model_3d.LIFTERS)}
TORCHRUN_ROW = ("sb", "fp32")
SPEED_LINE = re.compile(r"Epoch: \[\d+\]\[\d+/\d+\]\s+Speed ([0-9.]+) samples/s")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="prepared dataset root (DATASET.ROOT)")
    p.add_argument("--work", required=True, help="folder for lifter weights, runs and logs (emptied first)")
    p.add_argument("--cfg", default="experiments/h36m/w32_384x288_adam_lr1e-3.yaml")
    p.add_argument("--lifter-cfg", default=None, help="experiment file of the lifter training (default --cfg)")
    p.add_argument("--batch", type=int, default=32, help="TRAIN.BATCH_SIZE_PER_GPU")
    p.add_argument("--windows", type=int, default=3, help="timed windows after the first step")
    p.add_argument("--window-steps", type=int, default=10, help="steps per window (PRINT_FREQ)")
    p.add_argument("--lifter-steps", type=int, default=20, help="LIFTER_TRAIN.MAX_STEPS_PER_EPOCH")
    p.add_argument("--valid-batch", type=int, default=64)
    p.add_argument("--valid-batches", type=int, default=8)
    p.add_argument("--valid-repeats", type=int, default=3)
    p.add_argument("--loader-batches", type=int, default=20)
    p.add_argument("--gpu-id", type=int, default=0)
    p.add_argument("--dry", action="store_true", help="on the CPU (USE_CUDA False), for CI")
    p.add_argument("--opts", default="", help="KEY VALUE overrides for the lifter training and every training "
                                              "row, space-separated (e.g. a TF32 switch)")
    p.add_argument("--json-out", default=None, help="the JSON (default <work>/gpu_check.json)")
    args = p.parse_args(argv)
    if args.windows < 1 or args.window_steps < 1:
        p.error("--windows and --window-steps must be >= 1")
    return args


# ----------------------------------------------------------------------------- commands
def lifter_weights(work: Path) -> List[str]:
    return [x for n in GUIDANCE["multi"] for x in (f"MODEL_3D.WEIGHTS.{n.upper()}", str(work / "lifters" / f"{n}.pth"))]


def device_opts(args) -> List[str]:
    return (["--gpu_id", "-1", "USE_CUDA", "False"] if args.dry else ["--gpu_id", str(args.gpu_id)])


def lifter_argv(args, work: Path) -> List[str]:
    return (["--cfg", args.lifter_cfg or args.cfg, "--model_3d", ",".join(GUIDANCE["multi"]), "--epochs", "1"]
            + device_opts(args)
            + ["DATASET.ROOT", args.data, "OUTPUT_DIR", str(work / "lifters" / "runs"),
               "LIFTER_TRAIN.MAX_STEPS_PER_EPOCH", str(args.lifter_steps)] + lifter_weights(work) + args.opts.split())


def train_argv(args, work: Path, name: str, guidance: str, precision: str) -> List[str]:
    amp, channels_last = PRECISIONS[precision]
    names = GUIDANCE[guidance]
    flags = ["--loss_3d", "--loss_3d_z", "--ohklm", "--model_3d", ",".join(names)] if names else []
    return (["--cfg", args.cfg, "--epochs", "0"] + flags + device_opts(args)
            + ["DATASET.ROOT", args.data, "OUTPUT_DIR", str(work / "runs" / name), "MODEL.PRETRAINED", "",
               "TRAIN.MAX_STEPS_PER_EPOCH", str(1 + args.windows * args.window_steps),
               "PRINT_FREQ", str(args.window_steps), "TRAIN.BATCH_SIZE_PER_GPU", str(args.batch),
               "TRAIN.AMP", amp, "TRAIN.CHANNELS_LAST", str(channels_last)]
            + lifter_weights(work) + args.opts.split())


# ----------------------------------------------------------------------------- figures of a run
def run_figures(out_dir: Path, batch: int) -> Dict:
    """Step times from the training log and ``history.json`` under ``out_dir`` (one run)."""
    history_files = sorted(out_dir.rglob("history.json"))
    logs = sorted(out_dir.rglob("*_train.log"))
    if not history_files or not logs:
        raise RuntimeError(f"no history.json / training log under {out_dir}")
    speeds = [float(m.group(1)) for m in SPEED_LINE.finditer(logs[-1].read_text())]
    if len(speeds) < 2:
        raise RuntimeError(f"{logs[-1]}: fewer than two 'Speed' lines")
    # A speed logged as 0.0 (under 0.05 samples/s: only on a very slow CPU) carries no time.
    windows = [s for s in speeds[1:] if s > 0]
    step_ms = sum(1000.0 * batch / s for s in windows) / len(windows) if windows else None
    history = json.loads(history_files[-1].read_text())
    epoch = history["epochs"][-1]
    train, valid = epoch["train"], epoch.get("valid", {})
    return {"run_dir": str(history_files[-1].parent), "steps": int(train["steps"]), "batch": batch,
            "step_ms": step_ms, "samples_per_s": 1000.0 * batch / step_ms if step_ms else None,
            "window_samples_per_s": speeds[1:], "first_step_s": batch / speeds[0] if speeds[0] > 0 else None,
            "epoch_samples_per_s": train["samples_per_s"],
            "epoch_seconds": train["seconds"], "loss": train.get("total"),
            "valid_pdj": valid.get("pdj"), "valid_mpjpe": valid.get("mpjpe")}


def run_row(name: str, fn, rows: Dict, device: torch.device) -> None:
    """Runs ``fn() -> dict`` as row ``name``: status, wall time and peak memory; a failure is recorded."""
    print(f"\n=== {name}", flush=True)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    try:
        row = {"status": "ok", **fn()}
    except Exception as err:   # noqa: BLE001 - one failed row must not hide the others
        traceback.print_exc()
        row = {"status": f"failed: {type(err).__name__}: {' '.join(str(err).split())[:500]}"}
    row["wall_s"] = time.perf_counter() - start
    row.setdefault("peak_mem_mb", peak_memory_mb(device))
    rows[name] = row


def announce(command: str, argv: List[str]) -> str:
    """Prints and returns the command line of a row."""
    line = f"{command} {shlex.join(argv)}"
    print(line, flush=True)
    return line


def train_in_process(argv: List[str], out_dir: Path, batch: int) -> Dict:
    from run import train_hrnet
    command = announce("python run/train_hrnet.py", argv)
    train_hrnet.main(argv)
    return {"command": command, **run_figures(out_dir, batch)}


def train_torchrun(argv: List[str], out_dir: Path, batch: int) -> Dict:
    command = announce("torchrun --standalone --nproc_per_node=1 run/train_hrnet.py", argv)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           "run/train_hrnet.py"] + argv
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "torchrun_output.txt"
    with open(log, "w") as fh:
        done = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"torchrun exited with {done.returncode}: " + " | ".join(tail))
    return {"command": command, "peak_mem_mb": None, **run_figures(out_dir, batch)}


def validation_row(args, device: torch.device) -> Dict:
    from benchmarks import validation
    res = validation.run(validation.parse_args(
        ["--cfg", args.cfg, "--batch", str(args.valid_batch), "--batches", str(args.valid_batches),
         "--lifters", "sb,videopose", "--repeats", str(args.valid_repeats), "--device", str(device)]))
    keep = ("ours_samples_per_s", "original_samples_per_s", "speedup", "speedup_ceiling", "decode_ms",
            "metrics_ms_per_lifter", "numbers_equal", "pdj", "batch", "batches", "lifters")
    return {k: res[k] for k in keep}


def loader_row(args, device: torch.device) -> Dict:
    from benchmarks.benchmark import time_loader
    from lib.config import load_cfg
    cfg = load_cfg(args.cfg, ["DATASET.ROOT", args.data])
    notes: List[str] = []
    rate = time_loader(cfg, args.batch, device, args.loader_batches, False, notes)
    if rate is None:
        raise RuntimeError("; ".join(notes))
    return {"samples_per_s": rate, "batch": args.batch, "batches": args.loader_batches, "workers": int(cfg.WORKERS),
            "pin_memory": bool(cfg.PIN_MEMORY), "prefetch_factor": int(cfg.TRAIN.PREFETCH_FACTOR),
            "peak_mem_mb": None}


def nvidia_smi() -> Optional[str]:
    if shutil.which("nvidia-smi") is None:
        return None
    done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                          capture_output=True, text=True)
    return done.stdout.strip() or None


# ----------------------------------------------------------------------------- report
def format_table(res: Dict) -> str:
    def num(v, fmt):
        return "-" if v is None else fmt.format(v)

    lines = [f"GPU check ({'dry run on the CPU' if res['dry'] else res['gpu']}); {machine_text(res['machine'])}",
             f"config {res['settings']['cfg']}, batch {res['settings']['batch']}, "
             f"{res['settings']['steps']} steps per training row",
             f"{'row':<20} {'status':<8} {'samples/s':>10} {'ms/step':>9} {'1st step s':>10} {'peak MiB':>9}"]
    for name, row in res["rows"].items():
        status = "ok" if row["status"] == "ok" else "FAILED"
        lines.append(f"{name:<20} {status:<8} {num(row.get('samples_per_s'), '{:10.1f}'):>10} "
                     f"{num(row.get('step_ms'), '{:9.1f}'):>9} {num(row.get('first_step_s'), '{:10.2f}'):>10} "
                     f"{num(row.get('peak_mem_mb'), '{:9.0f}'):>9}")
    valid = res["rows"].get("validation", {})
    if valid.get("status") == "ok":
        lines.append(f"validation: ours {valid['ours_samples_per_s']:.0f} vs the original's "
                     f"{valid['original_samples_per_s']:.0f} samples/s ({valid['speedup']:.1f}x), same numbers")
    lines += [f"{name}: {row['status']}" for name, row in res["rows"].items() if row["status"] != "ok"]
    return "\n".join(lines)


def main(argv=None) -> Dict:
    args = parse_args(argv)
    work = Path(args.work)
    for sub in ("lifters", "runs"):              # a fresh run: the trainer refuses to overwrite finished runs
        shutil.rmtree(work / sub, ignore_errors=True)
    device = torch.device("cpu") if args.dry else torch.device("cuda", args.gpu_id)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device visible; use --dry to run the check on the CPU")
    rows: Dict[str, Dict] = {}
    from run import train_lifter

    def lifters():
        command = announce("python run/train_lifter.py", lifter_argv(args, work))
        res = train_lifter.main(lifter_argv(args, work))
        return {"command": command, "valid_mpjpe": {n: r["best"]["mpjpe"] for n, r in res.items()}}

    run_row("lifters", lifters, rows, device)
    for guidance in GUIDANCE:
        for precision in PRECISIONS:
            name = f"train_{guidance}_{precision}"
            argv = train_argv(args, work, name, guidance, precision)
            run_row(name, lambda a=argv, n=name: train_in_process(a, work / "runs" / n, args.batch), rows, device)
    name = "torchrun_{}_{}".format(*TORCHRUN_ROW)
    argv = train_argv(args, work, name, *TORCHRUN_ROW)
    run_row(name, lambda: train_torchrun(argv, work / "runs" / name, args.batch), rows, device)
    run_row("validation", lambda: validation_row(args, device), rows, device)
    run_row("loader", lambda: loader_row(args, device), rows, device)

    peaks = [r["peak_mem_mb"] for r in rows.values() if r.get("peak_mem_mb") is not None]
    machine = machine_info(device)
    res = {"dry": bool(args.dry), "device": str(device), "machine": machine, "gpu": machine["gpu"],
           "nvidia_smi": nvidia_smi(),
           "peak_mem_mb": max(peaks) if peaks else None,
           "peak_mem_kind": "torch.cuda.max_memory_allocated per row" if device.type == "cuda"
           else "peak resident set of the whole process so far (CPU)",
           "settings": {"cfg": args.cfg, "lifter_cfg": args.lifter_cfg or args.cfg, "data": args.data,
                        "batch": args.batch, "steps": 1 + args.windows * args.window_steps,
                        "windows": args.windows, "window_steps": args.window_steps,
                        "lifter_steps": args.lifter_steps, "opts": args.opts.split(),
                        "torch": torch.__version__, "cuda": torch.version.cuda,
                        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None},
           "rows": rows}
    path = write_json_out(args.json_out or work / "gpu_check.json", "gpu_check", res, device)
    print("\n" + format_table(res))
    print(f"\nJSON: {path}")
    if any(r["status"] != "ok" for r in rows.values()):
        raise SystemExit(1)
    return res


if __name__ == "__main__":
    main()
