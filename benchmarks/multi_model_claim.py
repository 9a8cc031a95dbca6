"""The paper's claims on the embedded benchmark, over several seeds (make demo-multi's preset).

For each seed, runs the pipeline (run/reproduce.py) into <out>/seed<S> (finished stages are reused)
and reads report.json's ``claims``; prints per seed and the mean over seeds:

1. every lifter's ground-truth-2D MPJPE over SimpleBaseline's (target: at most 1.3);
2. single-lifter guidance: sb's MPJPE improvement over 2D-only fine-tuning (target: at least 4.6 %);
3. multi-model guidance: the held-out lifter's improvement over 2D-only, averaged over the
   leave-one-out runs (target: at least 4.6 %).

    python benchmarks/multi_model_claim.py                      # 3 seeds, about 3x make demo-multi
    python benchmarks/multi_model_claim.py --seeds 0 --json     # one seed, machine-readable
    python benchmarks/multi_model_claim.py --json-out claim.json # the figures with the machine, to a file
    python benchmarks/multi_model_claim.py --out /tmp/c PIPELINE.FINETUNE_EPOCHS 0   # trailing preset overrides
"""
import argparse
import json
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # `python benchmarks/multi_model_claim.py`: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import add_json_out, write_json_out  # noqa: E402
from lib.apps.pipeline import reproduce  # noqa: E402

TARGET_RATIO = 1.3
TARGET_PCT = 4.6


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="experiments/pipeline/demo_multi.yaml")
    p.add_argument("--seeds", default="42,1,2", help="comma-separated SEED values (one pipeline each; 42 is the preset's)")
    p.add_argument("--out", default="output/multi_model_claim", help="<out>/seed<S> per seed")
    p.add_argument("--gpu_id", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    add_json_out(p)
    p.add_argument("opts", nargs="*", metavar="KEY VALUE", help="preset overrides")
    return p.parse_args(argv)


def figures(report: dict) -> dict:
    c = report["claims"]
    return {"gt2d_ratio_vs_sb": c["gt2d_ratio_vs_sb"],
            "single_sb_pct": (c["single_improvement_pct"] or {}).get("sb"),
            "held_out_mean_pct": c["held_out_mean_improvement_pct"],
            "held_out_pct": c["held_out_improvement_pct"]}


def _mean(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(per_seed: dict) -> dict:
    seeds = list(per_seed.values())
    lifters = list(seeds[0]["gt2d_ratio_vs_sb"] or {})
    out = {"gt2d_ratio_vs_sb": {n: _mean([s["gt2d_ratio_vs_sb"][n] for s in seeds]) for n in lifters},
           "single_sb_pct": _mean([s["single_sb_pct"] for s in seeds]),
           "held_out_mean_pct": _mean([s["held_out_mean_pct"] for s in seeds])}
    ratio_ok = all(m <= TARGET_RATIO for m, _ in out["gt2d_ratio_vs_sb"].values())
    out["met"] = {"gt2d_ratio": ratio_ok,
                  "single_sb": out["single_sb_pct"][0] is not None and out["single_sb_pct"][0] >= TARGET_PCT,
                  "held_out": out["held_out_mean_pct"][0] is not None and out["held_out_mean_pct"][0] >= TARGET_PCT}
    return out


def _pm(pair, fmt="{:.2f}"):
    m, s = pair
    return "-" if m is None else fmt.format(m) + " ± " + fmt.replace("+", "").format(s)


def main(argv=None):
    args = parse_args(argv)
    per_seed = {}
    for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
        report = reproduce(args.preset, out=Path(args.out) / f"seed{seed}", gpu_id=args.gpu_id,
                           opts=list(args.opts) + ["SEED", str(seed)])
        per_seed[seed] = figures(report)
    summary = summarize(per_seed)
    write_json_out(args.json_out, "multi_model_claim", {"preset": args.preset, "per_seed": per_seed, "summary": summary})
    if args.json:
        print(json.dumps({"per_seed": per_seed, "summary": summary}, indent=1))
        return summary
    lifters = list(summary["gt2d_ratio_vs_sb"])
    print("| seed | " + " | ".join(f"GT-2D {n}/sb" for n in lifters) + " | single sb (%) | held-out mean (%) |")
    print("|---|" + "---:|" * (len(lifters) + 2))
    fmt = lambda v, f="{:.2f}": "-" if v is None else f.format(v)   # noqa: E731
    for seed, f in per_seed.items():
        print(f"| {seed} | " + " | ".join(fmt(f["gt2d_ratio_vs_sb"][n]) for n in lifters)
              + f" | {fmt(f['single_sb_pct'], '{:+.1f}')} | {fmt(f['held_out_mean_pct'], '{:+.1f}')} |")
    print("| mean ± sd | " + " | ".join(_pm(summary["gt2d_ratio_vs_sb"][n]) for n in lifters)
          + f" | {_pm(summary['single_sb_pct'], '{:+.1f}')} | {_pm(summary['held_out_mean_pct'], '{:+.1f}')} |")
    met = summary["met"]
    print(f"\ntargets: GT-2D ratio <= {TARGET_RATIO} for every lifter: {'met' if met['gt2d_ratio'] else 'NOT met'}; "
          f"single sb >= {TARGET_PCT} %: {'met' if met['single_sb'] else 'NOT met'}; "
          f"held-out mean >= {TARGET_PCT} %: {'met' if met['held_out'] else 'NOT met'}")
    return summary


if __name__ == "__main__":
    main()
