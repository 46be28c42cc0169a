"""The held-out comparison of scripts/depth_evidence.sh, from the reports' JSON, under CompleteP and without it:
    python scripts/depth_table.py COMPLETEP.json COMPLETEP_TARGET.json NONE.json NONE_TARGET.json
Each pair: the proxies' report with --target (its `transfer` is apply-lr's LR for the target) and the target's
own sweep. The loss regret is the target's eval loss at the carried LR, interpolated linearly in log2 LR between
its grid points, minus its best grid point's loss."""

import json
import math
import sys

import numpy as np

MISS = 0.35  # log2: what the depth transfer must meet under CompleteP


def row(proxies: dict, target: dict) -> dict:
    (measured,) = target["optima"]
    carried = proxies["transfer"]["log2_lr"]
    grid = sorted((math.log2(p["lr"]), p["loss"]) for p in target["grid"] if p["loss"] is not None)
    x, loss = np.array([g[0] for g in grid]), np.array([g[1] for g in grid])
    inside = x[0] <= carried <= x[-1]
    regret = float(np.interp(carried, x, loss) - loss.min()) if inside else None
    depths = [(o["depth"], math.log2(o["lr"]), o["best_loss"], o["on_edge"]) for o in proxies["optima"]]
    depths.append((measured["depth"], math.log2(measured["lr"]), measured["best_loss"], measured["on_edge"]))
    return {"carried": carried, "measured": math.log2(measured["lr"]), "edge": measured["on_edge"],
            "regret": regret, "depths": depths, "deepest_proxy": max(o["depth"] for o in proxies["optima"])}


rows = {name: row(*(json.load(open(path)) for path in sys.argv[i:i + 2]))
        for name, i in (("completep", 1), ("none", 3))}
target_depth = rows["completep"]["depths"][-1][0]
print(f"| depth parametrization | carried log2 lr (the {rows['completep']['deepest_proxy']}-layer optimum) | "
      f"measured log2 lr* at {target_depth} layers | miss (log2) | loss regret at {target_depth} layers (nats) |")
print("|---|---:|---:|---:|---:|")
for name, r in rows.items():
    edge = " (grid edge: a bound)" if r["edge"] else ""
    regret = "outside the grid" if r["regret"] is None else f"{r['regret']:.3f}"
    print(f"| {name} | {r['carried']:.2f} | {r['measured']:.2f}{edge} | {r['carried'] - r['measured']:+.2f} | "
          f"{regret} |")
print()
print("| depth parametrization | depth | log2 lr* | loss at its optimum (best grid point) |")
print("|---|---:|---:|---:|")
for name, r in rows.items():
    for depth, log2_lr, loss, edge in r["depths"]:
        print(f"| {name} | {depth} | {log2_lr:.2f}{' (grid edge)' if edge else ''} | {loss:.3f} |")
print()
completep = rows["completep"]
miss = completep["carried"] - completep["measured"]
losses = [loss for _, _, loss, _ in completep["depths"]]
print(f"CompleteP: the carried LR misses the measured optimum by {miss:+.2f} log2, "
      f"{'within' if abs(miss) <= MISS else 'outside'} ±{MISS}; without it by "
      f"{rows['none']['carried'] - rows['none']['measured']:+.2f}. Deeper not worse at its own optimum under "
      f"CompleteP: {'yes' if all(b <= a for a, b in zip(losses, losses[1:])) else 'no'} "
      f"({', '.join(f'{loss:.3f}' for loss in losses)}).")
