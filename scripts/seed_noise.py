"""The seed-to-seed scatter of the fitted optimum, from one sweep per seed (scripts/seed_noise.sh).

    python scripts/seed_noise.py PRIOR.json SWEEP...

Each sweep is the same grid at another train.seed. Per (width, horizon), the fitted log2 lr* of every seed; their
sample variances pooled over the (width, horizon) cells, each with (seeds − 1) dof, give σ₀ and its dof ν₀, the
noise prior of every transferred LR's interval (pretrain/transfer/fit.py, NoisePrior), written to PRIOR.json.
Prints the markdown of docs/seed_noise_cpu.md. An optimum on the grid's edge only bounds the optimum: refused."""

import json
import math
import sys
from pathlib import Path

import numpy as np
from heldout import report


def main(prior: Path, sweeps: list[Path]) -> None:
    cells: dict[tuple[int, int], list[float]] = {}
    for sweep in sweeps:
        for optimum in report(sweep)["optima"]:
            if optimum["on_edge"]:
                sys.exit(f"error: {sweep}: width {optimum['width']}'s optimum sits on the LR grid's edge")
            cells.setdefault((optimum["width"], optimum["steps"]), []).append(math.log2(optimum["lr"]))
    print("| width | steps | fitted log2 lr* by seed | mean | sample σ |")
    print("|---:|---:|---|---:|---:|")
    squares, dof = 0.0, 0
    for (width, steps), optima in sorted(cells.items()):
        x = np.array(optima)
        squares += float(((x - x.mean()) ** 2).sum())
        dof += len(x) - 1
        print(f"| {width} | {steps} | {', '.join(f'{v:.2f}' for v in x)} | {x.mean():.2f} | {x.std(ddof=1):.3f} |")
    sigma = math.sqrt(squares / dof)
    print(f"\nPooled seed-to-seed σ of the fitted optimum: {sigma:.3f} log2, {dof} dof. Written to {prior}: "
          "apply-lr pools it with each fit's residual σ (see pretrain/transfer/fit.py).")
    prior.write_text(json.dumps({"sigma": round(sigma, 4), "dof": dof, "measured_by": "scripts/seed_noise.sh",
                                 "doc": "docs/seed_noise_cpu.md"}, indent=1) + "\n")


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), [Path(a) for a in sys.argv[2:]])
