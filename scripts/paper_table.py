"""The paper's ablation table on our stack (see scripts/paper_table.sh, which runs this):

    python scripts/paper_table.py OUT [--rows a,b] [--widths 32,64,128,256] [--points 9] [--steps N] [--extend 2]
                                      [--jobs N] [--write-only] [--docs docs]
                                      [--results pretrain/transfer/paper_table.json] [-- OVERRIDES]

For every row of `pretrain.transfer.paper_table.ROWS`: an LR sweep of configs/transfer_cpu.yaml with the row's
settings (`pretrain sweep`, in OUT/ROW, restartable: a rerun trains only the points it lacks), grown by two more
grid points, up to --extend times, wherever an optimum sits on the grid's edge, then `pretrain report --json` into
OUT/ROW/report.json; --jobs rows at a time (default: one per core), each run on one thread, each row's output in
OUT/ROW.log. Then, from every row's report (with --write-only, from the reports already there):
DOCS/paper_table.md (per row the optimum per width, the drift per doubling of width with its interval, our
verdict, the paper's, whether they agree), DOCS/paper_table.png, and the machine-readable RESULTS that apply-lr
cites. A row not run yet shows as not measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TextIO

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pretrain.config import load_config  # noqa: E402
from pretrain.transfer.fit import DRIFT_TOLERANCE  # noqa: E402
from pretrain.transfer.paper_table import RESULTS, ROWS, VERDICTS, Row, drift_text, row_settings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "transfer_cpu.yaml"  # its micro batch, 16 sequences, is the baseline's global batch
WIDTHS = "32,64,128,256"  # 8x; four widths leave the drift fit 2 residual dof, the fewest with an interval
CENTRE = -4.5  # log2 of the μP optimum of transfer_cpu.yaml at every width (docs/transfer_cpu.txt)
# Where a row's grid sits and how fine it is, in log2 LR, where it differs from the baseline's: SP's optimum falls
# by about 1 per doubling (3 over 8x: a coarser, wider grid), Lion's sits 3-10x below Adam's, and a 4x larger
# batch moves it up by about √4 (the square-root rule; the paper's scripts shifted the grid so), a smaller down.
GRIDS = {"sp": (-6.0, 1.0), "lion": (-7.0, 0.5), "batch_x4": (-3.5, 0.5), "batch_div4": (-5.5, 0.5)}
# The batch rows: the global batch as a multiple of the config's, at equal tokens (`--equal-tokens`), and what
# lets it be formed (a micro batch that divides it).
BATCHES = {"batch_x4": (4, []), "batch_div4": (0.25, ["train.micro_batch_size=4", "train.global_batch_size=16"])}
BASE_BATCH = 16


def sweep_options(row: Row, steps: int | None) -> list[str]:
    """The row's `pretrain sweep` options and overrides beyond the widths and the grid."""
    factor, overrides = BATCHES.get(row.name, (None, []))
    batches = [] if factor is None else ["--batches", str(int(BASE_BATCH * factor)), "--equal-tokens"]
    return [*(["--steps", str(steps)] if steps else []), *batches, *row_settings(row), *overrides]


def pretrain(*args: str, log: TextIO, capture: bool = False) -> str:
    """`pretrain ARGS` on one thread (`--jobs` rows run side by side: threads of their own would contend for the
    cores, which slowed a run 8x on the 2-core machine); its stdout returned with `capture`, else written to
    `log` with its stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "pretrain", *args], cwd=ROOT, env=env, check=True, text=True,
                          stdout=subprocess.PIPE if capture else log, stderr=log).stdout


def run_row(row: Row, out: Path, args: argparse.Namespace) -> None:
    """Sweep the row, grow its grid past any edge optimum (up to --extend times), and write its report.json; the
    commands' output goes to OUT.log."""
    centre, step = GRIDS.get(row.name, (CENTRE, 0.5))
    low = centre - step * (args.points - 1) / 2
    high = low + step * (args.points - 1)
    with out.with_suffix(".log").open("a") as log:
        for attempt in range(args.extend + 1):
            pretrain("sweep", str(CONFIG), "--widths", args.widths, "--lrs", f"2^{low:g}:2^{high:g}:{step:g}",
                     "--out", str(out), *sweep_options(row, args.steps), *args.overrides, log=log)
            report = pretrain("report", str(out), "--json", "--plot", str(out / "loss_vs_lr.png"), log=log,
                              capture=True)
            (out / "report.json").write_text(report)
            edges = {math.log2(o["best_lr"]) for o in json.loads(report)["optima"] if o["on_edge"]}
            if not edges or attempt == args.extend:
                return
            low -= 2 * step if min(edges) <= low + 1e-9 else 0  # two more points past the edge the optimum is on
            high += 2 * step if max(edges) >= high - 1e-9 else 0


def measured(row: Row, out: Path) -> dict:
    """The row as RESULTS holds it: its settings and the paper's verdict, and what its report measured (null
    fields before it has one)."""
    entry = {"name": row.name, "change": row.change, "settings": row_settings(row), "paper": row.paper,
             "paper_optima": row.paper_optima, "note": row.note, "optima": [], "drift": None, "drift_interval": None,
             "verdict": None, "ours": None, "agrees": None, "runs": 0, "seconds": 0.0}
    path = out / row.name / "report.json"
    if not path.exists():
        return entry
    report = json.loads(path.read_text())
    results = [json.loads(p.read_text()) for p in (out / row.name / "points").glob("*/result.json")]
    ours = VERDICTS[report["verdict"]]
    entry.update(optima=[{"width": o["width"], "log2_lr": math.log2(o["lr"]), "on_edge": o["on_edge"]}
                         for o in report["optima"]],
                 drift=report["drift"], drift_interval=report["drift_interval"], verdict=report["verdict"],
                 ours=ours, agrees=None if row.paper is None or ours == "undetermined" else ours == row.paper,
                 runs=len(results), seconds=sum(r.get("seconds", 0.0) for r in results))
    return entry


def machine() -> str:
    """The CPU's model and core count, as /proc/cpuinfo and the OS say."""
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.exists() else []
    return f"{names[0] if names else platform.processor() or 'unknown CPU'}, {os.cpu_count()} cores"


def write(out: Path, args: argparse.Namespace) -> dict:
    """RESULTS, DOCS/paper_table.md and DOCS/paper_table.png from the rows' reports."""
    rows = [measured(row, out) for row in ROWS]
    widths = [int(w) for w in args.widths.split(",")]
    runs, seconds = sum(r["runs"] for r in rows), sum(r["seconds"] for r in rows)
    cfg = load_config(CONFIG, args.overrides)
    recipe = (f"{cfg.model.n_layers} layers, heads of {cfg.model.head_dim}, sequences of {cfg.data.seq_len}, "
              f"{args.steps or cfg.train.steps} steps of {cfg.train.global_batch(1)} sequences")
    results = {"scope": f"CPU, widths {widths[0]}-{widths[-1]}", "machine": machine(), "widths": widths,
               "config": str(CONFIG.relative_to(ROOT)), "recipe": recipe, "runs": runs, "train_seconds": seconds,
               "rows": rows}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    args.docs.mkdir(parents=True, exist_ok=True)
    plot(rows, args.docs / "paper_table.png")
    (args.docs / "paper_table.md").write_text(markdown(results, args.results))
    return results


def _cell(row: dict, width: int) -> str:
    found = [o for o in row["optima"] if o["width"] == width]
    if not found:
        return "–"
    return f"{found[0]['log2_lr']:.2f}" + ("*" if found[0]["on_edge"] else "")


# Why a small CPU table may part from the paper, by the paper's verdict.
WHY_APART = {
    "breaks": "The paper's runs are 4x to 64x wider and far longer: what it saw between widths 128 and 2048 need "
              "not show between 32 and 256, so apply-lr keeps the paper's rule.",
    "holds": "Our runs are narrower and far shorter than the paper's: a drift over widths 32-256 at 200 steps may "
             "fade at the paper's widths, so apply-lr refuses the setting only on our measurement's word.",
}


def markdown(results: dict, results_path: Path) -> str:
    widths, rows = results["widths"], results["rows"]
    lines = [
        "# The paper's ablation table on our stack",
        "",
        "Every row of the paper's μ-transfer ablations (Lingle 2024, widths 128/512/2048) as an LR sweep on our stack: "
        f"`{results['config']}` ({results['recipe']}) with the row's one change, at widths "
        f"{', '.join(map(str, widths))}. Per row: the fitted optimum log2 LR at "
        "each width (`*`: the best point sits on the grid's edge, only a bound), the drift of log2 lr* per doubling "
        "of width with its 80% interval (`pretrain report`), our verdict (holds: the interval lies within "
        f"±{DRIFT_TOLERANCE} log2 per doubling; breaks: wholly outside it), the paper's, and whether they agree. "
        "The LR grids are 0.5 log2 apart around each row's expected optimum (SP: 1 log2), grown where an "
        f"optimum fell on an edge. The batch rows train the same tokens at {BATCHES['batch_x4'][0]:g}x and "
        f"{BATCHES['batch_div4'][0]:g}x the batch, their grids shifted by +1 and -1 log2 (the square-root rule).",
        "",
        (f"Written by `bash scripts/paper_table.sh` (restartable) on {results['machine']}: {results['runs']} runs, "
         f"{results['train_seconds'] / 3600:.1f} h of training in all (the runs' own times, rows side by side). "
         if results["runs"] else "No row is measured yet: `bash scripts/paper_table.sh` runs them all (see its "
         "header for the cost). ")
        + f"Machine-readable: `{_shown(results_path)}`, which `pretrain apply-lr` cites when it refuses a setting.",
        "",
        f"| row | change | {' | '.join(f'w{w}' for w in widths)} | drift per doubling | ours | paper | agree |",
        "|---|---|" + "---:|" * len(widths) + "---|---|---|---|",
    ]
    for r in rows:
        drift = ("not measured" if r["verdict"] is None else
                 drift_text(r).removeprefix("a drift of ").replace(" log2 per width doubling", ""))
        paper = (r["paper"] or "not in the paper") + (f" ({r['paper_optima']})" if r["paper_optima"] else "")
        agree = {True: "yes", False: "**no**", None: "–"}[r["agrees"]]
        lines.append(f"| {r['name']} | {r['change']}{_settings(r)} | {' | '.join(_cell(r, w) for w in widths)} | "
                     f"{drift} | {r['ours'] or '–'} | {paper} | {agree} |")
    decided = [r for r in rows if r["paper"] and r["agrees"] is not None]
    lines += ["", f"Of the {sum(1 for r in rows if r['paper'])} rows the paper ran, our table decides "
              f"{len(decided)}: it agrees on {sum(r['agrees'] for r in decided)} and disagrees on "
              f"{sum(not r['agrees'] for r in decided)}; "
              f"{sum(1 for r in rows if r['paper'] and r['verdict'] == 'undetermined')} are undetermined and "
              f"{sum(1 for r in rows if r['paper'] and r['verdict'] is None)} not measured.",
              "", "![optima and drifts](paper_table.png)", ""]
    disagreements = [r for r in rows if r["agrees"] is False]
    lines += ["## Where we disagree with the paper", ""]
    if not disagreements:
        lines.append("Nowhere, among the rows measured and decided so far.")
    for r in disagreements:
        lines.append(f"- **{r['name']}** ({r['change']}): the paper found transfer to {r['paper'][:-1]}"
                     + (f" ({r['paper_optima']})" if r["paper_optima"] else "")
                     + f" at widths 128 to 2048; our {results['scope']} table measured {drift_text(r)}, so it "
                     f"{r['ours']} here. " + WHY_APART[r["paper"]] + _note(r))
    undecided = [r for r in rows if r["verdict"] == "undetermined"]
    if undecided:
        lines += ["", "## Rows our table leaves undetermined", "",
                  f"Their drift's 80% interval straddles ±{DRIFT_TOLERANCE} log2 per doubling: neither holding nor "
                  "breaking is shown. They neither confirm nor contradict the paper; more widths (a wider range, "
                  "or more points inside it) or seeds per point would narrow the interval.", ""]
        lines += [f"- **{r['name']}** ({r['change']}; paper: {r['paper'] or 'not in the paper'}): {drift_text(r)}."
                  + _note(r) for r in undecided]
    lines.append("")
    return "\n".join(lines) + "\n"


def _note(row: dict) -> str:
    return f" {row['note']}" if row["note"] else ""


def _settings(row: dict) -> str:
    return f" (`{' '.join(row['settings'])}`)" if row["settings"] else ""


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def plot(rows: list[dict], path: Path) -> None:
    """Left: log2 lr* against width per measured row; right: each row's drift with its interval, the tolerance
    band shaded, coloured by the paper's verdict."""
    colours = {"holds": "tab:blue", "breaks": "tab:red", None: "tab:grey"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 6))
    for r in rows:
        if r["optima"]:
            left.plot([o["width"] for o in r["optima"]], [o["log2_lr"] for o in r["optima"]], marker="o",
                      color=colours[r["paper"]], alpha=0.7)
            left.annotate(r["name"], (r["optima"][-1]["width"], r["optima"][-1]["log2_lr"]), fontsize=7)
    widths = sorted({o["width"] for r in rows for o in r["optima"]})
    left.set(xscale="log", xlabel="width (d_model)", ylabel="fitted log2 lr*", title="optimum per width")
    left.set_xticks(widths, [str(w) for w in widths], minor=False)
    left.minorticks_off()
    right.axvspan(-DRIFT_TOLERANCE, DRIFT_TOLERANCE, color="0.9")
    for y, r in enumerate(rows):
        interval = r["drift_interval"]
        if r["drift"] is not None:
            if interval and interval["low"] is not None:
                right.plot([interval["low"], interval["high"]], [y, y], color=colours[r["paper"]])
            right.plot(r["drift"], y, "o", color=colours[r["paper"]])
    right.set(yticks=range(len(rows)), yticklabels=[r["name"] for r in rows], xlabel="drift of log2 lr* per doubling",
              title="drift, 80% interval (paper: blue holds, red breaks)")
    right.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="where the sweeps go (a directory per row)")
    parser.add_argument("--rows", help="comma-separated row names (default: all)")
    parser.add_argument("--widths", default=WIDTHS)
    parser.add_argument("--points", type=int, default=9, help="LRs per row's grid")
    parser.add_argument("--steps", type=int, help="the horizon in steps at the baseline batch (default: 200)")
    parser.add_argument("--extend", type=int, default=2, help="times a grid grows past an edge optimum")
    parser.add_argument("--jobs", type=int, default=os.cpu_count(), help="rows swept side by side, one thread each")
    parser.add_argument("--write-only", action="store_true", help="write the table from the sweeps in OUT, run none")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides for every sweep")
    args = parser.parse_intermixed_args()
    names = args.rows.split(",") if args.rows else [row.name for row in ROWS]
    unknown = sorted(set(names) - {row.name for row in ROWS})
    if unknown:
        parser.error(f"--rows: unknown {', '.join(unknown)}; rows: {', '.join(row.name for row in ROWS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(run_row, row, args.out / row.name, args): row for row in ROWS
                   if row.name in names and not args.write_only}
        for future in as_completed(futures):
            row = futures[future]
            try:
                future.result()
            except subprocess.CalledProcessError:
                failed.append(row.name)
            print(f"{row.name}: {'failed' if row.name in failed else 'swept'} (see {args.out / row.name}.log)",
                  flush=True)
    results = write(args.out, args)
    print(f"{results['runs']} runs, {results['train_seconds'] / 60:.1f} min of training; wrote "
          f"{args.docs / 'paper_table.md'}, {args.docs / 'paper_table.png'}, {args.results}")
    if failed:
        sys.exit(f"rows that failed (rerun to retry them): {', '.join(failed)}")

if __name__ == "__main__":
    main()
