"""The comparison of scripts/warmup_shape_evidence.sh, from the two sweeps' report JSON:
    python scripts/warmup_shape_table.py FIXED.json FRACTION.json"""

import json
import math
import sys

reports = {name: json.load(open(path)) for name, path in zip(("fixed", "fraction"), sys.argv[1:3])}


def beta(report: dict) -> str:
    fit = report["horizon_fit"]
    interval = fit["beta_interval"]
    if interval["low"] is None:
        return f"{fit['beta']:.3f} (undetermined, {fit['dof']} dof)"
    return (f"{fit['beta']:.3f} ± {fit['beta_se']:.3f}, {interval['confidence']:.0%} interval "
            f"[{interval['low']:.3f}, {interval['high']:.3f}], {fit['dof']} dof")


print("| warmup | β (log2 lr* per doubling of tokens) | residual σ (log2) | per width |")
print("|---|---|---:|---|")
for report in reports.values():
    fit = report["horizon_fit"]
    widths = ", ".join(f"{w}: {b:.2f}" for w, b in fit["width_betas"].items())
    print(f"| {report['warmup']} | {beta(report)} | {fit['sigma']:.2f} | {widths} |")
print()
difference = reports["fixed"]["horizon_fit"]["beta"] - reports["fraction"]["horizon_fit"]["beta"]
print(f"β with a fixed warmup minus β with a fixed fraction: {difference:+.3f} per doubling of tokens; over an "
      f"extrapolation 8x past the longest horizon (3 doublings) the two predicted optima differ by "
      f"{3 * difference:.2f} log2 (the fixed warmup's lower).")
print()
print("| width | steps | log2 lr*, fixed warmup | log2 lr*, fixed fraction |")
print("|---:|---:|---:|---:|")
optima = {name: {(o["width"], o["steps"]): o for o in r["optima"]} for name, r in reports.items()}
for key in sorted(optima["fixed"]):
    cells = []
    for name in reports:
        o = optima[name].get(key)
        cells.append("-" if o is None else f"{math.log2(o['lr']):.2f}" + (" (edge)" if o["on_edge"] else ""))
    print(f"| {key[0]} | {key[1]} | {' | '.join(cells)} |")
