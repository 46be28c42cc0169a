"""The horizon law's reach: how far log2 lr* strays from the fitted power law outside the swept ladder, per
doubling of tokens, beyond what the fits' interval counts (apply_lr.HORIZON_REACH).

    python scripts/horizon_reach.py FIT.json TABLE.md...

FIT.json is `pretrain report --json` of the proxy sweep of scripts/calibration_evidence.sh, each TABLE.md a
held-out table scripts/heldout.py wrote for it (several: their targets pooled). Each target is predicted again
with today's apply-lr (the seed-noise prior pooled in) but without the reach term; its miss m (prediction −
measured optimum) then has variance v (the interval's, half-width / t) plus (κ·d)², d its doublings outside the
ladder. By moments, κ² = max(0, Σ(m² − v)) / Σd² over the targets outside the ladder (d > 0). Prints each
target's figures and κ."""

import json
import math
import re
import sys
import tempfile
from pathlib import Path

import yaml

from pretrain.config import load_config
from pretrain.transfer import apply_lr
from pretrain.transfer.fit import SweepPoint, t_quantile
from pretrain.transfer.report import grid_report
from pretrain.transfer.sweep import create_sweep

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "transfer_cpu.yaml"
ROW = re.compile(r"^\| width (\d+), (\d+) steps × (\d+) tokens [^|]*\| (-?[\d.]+) \|[^|]*\| (-?[\d.]+) \|")


def main(fit_json: Path, tables: list[Path]) -> None:
    fit = json.loads(fit_json.read_text())
    grid = [SweepPoint(p["width"], p["steps"], p["lr"], p["status"], p["loss"], p["batch"], p["depth"])
            for p in fit["grid"]]
    apply_lr.HORIZON_REACH = 0.0  # the interval as it would be without the term measured here
    with tempfile.TemporaryDirectory() as tmp:
        plan = create_sweep(CONFIG, sorted({p.width for p in grid}), sorted({p.lr for p in grid}),
                            Path(tmp) / "fit", steps=fit["steps"])
        report = grid_report(plan, grid)
        shortest, longest = min(fit["steps"]), max(fit["steps"])
        squares, doublings = 0.0, 0.0
        print("| target | predicted | measured | miss m | interval sd √v | doublings d | m² − v |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for line in (line for table in tables for line in table.read_text().splitlines()):
            row = ROW.match(line)
            if not row:
                continue
            width, steps, measured = int(row[1]), int(row[2]), float(row[5])
            target = Path(tmp) / f"w{width}-s{steps}.yaml"
            target.write_text(yaml.safe_dump({"base": str(CONFIG), "model": {"d_model": width},
                                              "train": {"steps": steps, "global_batch_size": 16}}))
            result = apply_lr.transfer(plan, report, load_config(target), prior=apply_lr.seed_noise())
            interval = result.interval
            sd = (interval.high - interval.low) / 2 / t_quantile(0.9, interval.dof)
            miss = interval.estimate - measured
            d = apply_lr.doublings_outside(steps, shortest, longest)
            if d:  # inside the ladder a miss says nothing about the reach
                squares += miss**2 - sd**2
                doublings += d**2
            print(f"| width {width}, {steps} steps | {interval.estimate:.2f} | {measured:.2f} | {miss:+.2f} | "
                  f"{sd:.3f} | {d:.2f} | {miss**2 - sd**2:+.4f} |")
    kappa = math.sqrt(max(0.0, squares) / doublings)
    print(f"\nκ = √(max(0, {squares:.4f}) / {doublings:.2f}) = {kappa:.3f} log2 per doubling outside the ladder")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), [Path(a) for a in sys.argv[2:]])
