"""The held-out comparison of scripts/depth_evidence.sh, from the reports' JSON in DOCS, under CompleteP and without
it, for each target depth:
    python scripts/depth_table.py DOCS DEPTH [DEPTH ...]
Per parametrization P and target depth D: DOCS/depth_cpu_P_LD.json, the proxies' report with --target (its
`transfer` is apply-lr's LR for the target), and DOCS/depth_cpu_P_LD_target.json, the target's own sweep. The loss
regret is the target's eval loss at the carried LR, interpolated linearly in log2 LR between its grid points, minus
its best grid point's loss."""

import json
import math
import sys
from pathlib import Path

import numpy as np

MISS = 0.35  # log2: what the depth transfer must meet under CompleteP
PARAMETRIZATIONS = ("completep", "none")


def row(proxies: dict, target: dict) -> dict:
    (measured,) = target["optima"]
    carried = proxies["transfer"]["log2_lr"]
    grid = sorted((math.log2(p["lr"]), p["loss"]) for p in target["grid"] if p["loss"] is not None)
    x, loss = np.array([g[0] for g in grid]), np.array([g[1] for g in grid])
    inside = x[0] <= carried <= x[-1]
    deepest = max(o["depth"] for o in proxies["optima"])
    return {"carried": carried, "measured": math.log2(measured["lr"]), "edge": measured["on_edge"],
            "loss": measured["best_loss"], "depth": measured["depth"], "deepest_proxy": deepest,
            "regret": float(np.interp(carried, x, loss) - loss.min()) if inside else None,
            "proxies": [(o["depth"], math.log2(o["lr"]), o["best_loss"], o["on_edge"]) for o in proxies["optima"]]}


def load(docs: Path, parametrization: str, depth: str) -> dict:
    name = f"depth_cpu_{parametrization}_L{depth}"
    return row(*(json.loads((docs / f"{name}{suffix}.json").read_text()) for suffix in ("", "_target")))


docs, depths = Path(sys.argv[1]), sys.argv[2:]
rows = {p: [load(docs, p, depth) for depth in depths] for p in PARAMETRIZATIONS}
deepest_proxy = rows["completep"][0]["deepest_proxy"]
print(f"| depth parametrization | target depth | carried log2 lr (the {deepest_proxy}-layer optimum) "
      "| measured log2 lr* | miss (log2) | drift per doubling of depth past the proxies "
      "| loss regret at the target (nats) |")
print("|---|---:|---:|---:|---:|---:|---:|")
for p, targets in rows.items():
    for r in targets:
        edge = " (grid edge: a bound)" if r["edge"] else ""
        regret = "outside the grid" if r["regret"] is None else f"{r['regret']:.3f}"
        miss = r["carried"] - r["measured"]
        print(f"| {p} | {r['depth']} | {r['carried']:.2f} | {r['measured']:.2f}{edge} | {miss:+.2f} | "
              f"{-miss / math.log2(r['depth'] / r['deepest_proxy']):+.2f} | {regret} |")
print()
print("| depth parametrization | depth | log2 lr* | loss at its optimum (best grid point) |")
print("|---|---:|---:|---:|")
for p, targets in rows.items():
    points = targets[0]["proxies"] + [(r["depth"], r["measured"], r["loss"], r["edge"]) for r in targets]
    for depth, log2_lr, loss, edge in points:
        print(f"| {p} | {depth} | {log2_lr:.2f}{' (grid edge)' if edge else ''} | {loss:.3f} |")
print()
for r in rows["completep"]:
    miss = r["carried"] - r["measured"]
    none = next(n for n in rows["none"] if n["depth"] == r["depth"])
    print(f"At {r['depth']} layers, CompleteP: the carried LR misses the measured optimum by {miss:+.2f} log2, "
          f"{'within' if abs(miss) <= MISS else 'outside'} ±{MISS}; without it by "
          f"{none['carried'] - none['measured']:+.2f}.")
losses = [loss for _, _, loss, _ in rows["completep"][0]["proxies"]] + [r["loss"] for r in rows["completep"]]
deeper_not_worse = all(b <= a for a, b in zip(losses, losses[1:]))
print(f"Deeper not worse at its own optimum under CompleteP: {'yes' if deeper_not_worse else 'no'} "
      f"({', '.join(f'{x:.3f}' for x in losses)}).")
