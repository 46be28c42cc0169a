"""Held-out checks of a transferred LR, shared by scripts/calibration_evidence.sh and scripts/batch_evidence.sh.

    python scripts/heldout.py measure FIT_SWEEP TARGET.yaml OUT [apply-lr options]
        predicts the target's LR from the proxy sweep (`pretrain apply-lr --print --json`, kept in
        OUT/prediction.json), then measures the target's own optimum with an LR sweep of the target config centred
        on the prediction (±1.5 log2 in 0.5 steps), grown by 1 log2 wherever the optimum lands on the grid's edge,
        so the measurement does not depend on the prediction being right. Restartable, like the sweeps.
    python scripts/heldout.py table FIT_SWEEP OUT...
        the markdown table of the held-out targets measured into each OUT: prediction, interval, measured optimum,
        the miss in log2 LR and in loss (regret), against the naive reuse of the nearest proxy optimum.

The regret of an LR is the target's loss there minus its loss at the measured optimum, both read off the parabola
the report fits through the target's points within ±1 log2 of the optimum (further out, by linear interpolation
between grid points)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

HALF_GRID = 1.5  # log2: the first grid spans the prediction ± this
STEP = 0.5
GROW = 1.0  # log2 added on the side where the optimum sits on the grid's edge
MAX_GROWTHS = 3


def pretrain(*args: str, check: bool = True) -> str:
    done = subprocess.run(["pretrain", *args], capture_output=True, text=True)
    if check and done.returncode:
        sys.exit(f"pretrain {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def report(sweep: Path) -> dict:
    return json.loads(pretrain("report", str(sweep), "--json"))


def measure(fit: Path, target: Path, out: Path, *apply_options: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    prediction = json.loads(pretrain("apply-lr", str(fit), str(target), "--print", "--json", *apply_options,
                                     check=False))
    (out / "prediction.json").write_text(json.dumps(prediction, indent=1) + "\n")
    cfg = yaml.safe_load(target.read_text())
    width, steps = cfg["model"]["d_model"], cfg["train"]["steps"]
    centre = round(prediction["log2_lr"] / STEP) * STEP
    low, high = centre - HALF_GRID, centre + HALF_GRID
    for _ in range(MAX_GROWTHS + 1):
        pretrain("sweep", str(target), "--widths", str(width), "--steps", str(steps), "--lrs",
                 f"2^{low:g}:2^{high:g}:{STEP:g}", "--out", str(out / "sweep"))
        (optimum,) = report(out / "sweep")["optima"]
        if not optimum["on_edge"]:
            return
        if math.log2(optimum["best_lr"]) <= low + 1e-9:
            low -= GROW
        else:
            high += GROW
    print(f"{target}: the optimum is still on the grid's edge after {MAX_GROWTHS} growths", file=sys.stderr)


def regret(grid: list[dict], log2_lr: float, optimum: float) -> float:
    """The target's loss at `log2_lr` minus its least loss (see the module docstring); nan off the grid."""
    points = sorted((math.log2(p["lr"]), p["loss"]) for p in grid if p["status"] == "ok")
    x, y = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    centre = x[np.argmin(np.abs(x - optimum))]
    window = np.abs(x - centre) <= 1.0 + 1e-9
    parabola = np.polyfit(x[window], y[window], 2)
    least = np.polyval(parabola, -parabola[1] / (2 * parabola[0]))
    if abs(log2_lr - centre) <= 1.0:
        return float(np.polyval(parabola, log2_lr) - least)
    if not x[0] <= log2_lr <= x[-1]:
        return math.nan
    return float(np.interp(log2_lr, x, y) - least)


def naive(fit_report: dict, width: int, tokens: int, tokens_per_step: int) -> dict:
    """What a user would reuse without the fits: the proxy optimum nearest the target in batch, then in tokens,
    at the target's width if swept, else the widest."""
    optima = fit_report["optima"]
    widths = {o["width"] for o in optima}
    at = width if width in widths else max(widths)
    candidates = [o for o in optima if o["width"] == at]
    batch = min({o["tokens_per_step"] for o in candidates}, key=lambda t: abs(math.log(t / tokens_per_step)))
    candidates = [o for o in candidates if o["tokens_per_step"] == batch]
    return min(candidates, key=lambda o: abs(math.log(o["tokens"] / tokens)))


def table(fit: Path, outs: list[Path]) -> None:
    fit_report = report(fit)
    print("| held-out target | predicted log2 lr | 80% interval (width) | measured log2 lr* | inside | miss (log2) "
          "| regret (loss) | naive reuse: log2 lr, miss, regret |")
    print("|---|---:|---|---:|:-:|---:|---:|---|")
    inside_count, widths, misses, refusals = 0, [], [], []
    for out in outs:
        prediction = json.loads((out / "prediction.json").read_text())
        target = report(out / "sweep")
        (measured,) = target["optima"]
        truth = math.log2(measured["lr"])
        interval = prediction["interval_log2"]
        predicted = prediction["log2_lr"]
        reused = naive(fit_report, measured["width"], measured["tokens"], measured["tokens_per_step"])
        reused_log2 = math.log2(reused["lr"])
        inside = interval is not None and interval[0] <= truth <= interval[1]
        inside_count += inside
        misses.append(predicted - truth)
        if interval is not None:
            widths.append(interval[1] - interval[0])
        span = "none" if interval is None else f"[{interval[0]:.2f}, {interval[1]:.2f}] ({widths[-1]:.2f})"
        refused = ""
        if prediction["problems"]:
            refusals.append((measured["width"], measured["steps"], prediction["problems"]))
            refused = f" (refused, note {len(refusals)})"
        at = f"width {reused['width']}, {reused['tokens']:.3g} tokens × {reused['tokens_per_step']}"
        print(f"| width {measured['width']}, {measured['steps']} steps × {measured['tokens_per_step']} tokens "
              f"({measured['tokens']:.3g} tokens){refused} | {predicted:.2f} | {span} | {truth:.2f} | "
              f"{'yes' if inside else 'no'} | {predicted - truth:+.2f} | "
              f"{regret(target['grid'], predicted, truth):.4f} | {reused_log2:.2f} ({at}), "
              f"{reused_log2 - truth:+.2f}, {regret(target['grid'], reused_log2, truth):.4f} |")
    print()
    widths_text = ", ".join(f"{w:.2f}" for w in widths) + f" log2 (mean {np.mean(widths):.2f})" if widths else "none"
    print(f"Inside the 80% interval: {inside_count} of {len(outs)}. Interval widths: {widths_text}. Miss of the "
          f"prediction: mean |miss| {np.mean(np.abs(misses)):.2f} log2, largest {max(misses, key=abs):+.2f}.")
    for number, (width, steps, problems) in enumerate(refusals, 1):
        print(f"\n{number}. apply-lr refused width {width} at {steps} steps: " + "; ".join(problems))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "measure":
        measure(Path(args[0]), Path(args[1]), Path(args[2]), *args[3:])
    elif command == "table":
        table(Path(args[0]), [Path(a) for a in args[1:]])
    else:
        sys.exit(__doc__)
