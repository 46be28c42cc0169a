"""The held-out comparison of scripts/horizon_evidence.sh, from the two reports' JSON:
    python scripts/horizon_table.py FIT.json HELDOUT.json WIDTH"""

import json
import math
import sys

fit_report, heldout_report = (json.load(open(path)) for path in sys.argv[1:3])
width = int(sys.argv[3])
fit, target = fit_report["horizon_fit"], fit_report["target"]
(measured,) = [o for o in heldout_report["optima"] if o["width"] == width]
longest = max(fit_report["steps"])
(naive,) = [o for o in fit_report["optima"] if o["width"] == width and o["steps"] == longest]
truth = math.log2(measured["lr"])
se = fit["beta_se"]
print(f"Horizon fit over {', '.join(map(str, fit_report['steps']))} steps (warmup {fit_report['warmup']}): "
      f"β = {fit['beta']:.3f} ± {se:.3f} (residual σ {fit['sigma']:.2f} log2, {fit['dof']} dof); per width: "
      + ", ".join(f"{w}: {b:.2f}" for w, b in fit["width_betas"].items()))
print()
print(f"| width {width}, {measured['steps']} steps ({measured['tokens']:.3g} tokens) | log2 lr* | off the measured |")
print("|---|---:|---:|")
print(f"| measured (held-out LR sweep{'' if measured['fitted'] else ', best grid point'}) | {truth:.2f} | |")
print(f"| predicted by the horizon fit ({target['ratio']:.3g}x past {longest} steps) | {target['log2_lr']:.2f} | "
      f"{target['log2_lr'] - truth:+.2f} |")
naive_log2 = math.log2(naive["lr"])
print(f"| naive: the {longest}-step optimum reused | {naive_log2:.2f} | {naive_log2 - truth:+.2f} |")
