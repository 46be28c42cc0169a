"""μ-Transfer: find the optimal LR on small proxies and carry it to the target.

- `sweep`: a plan of (width, depth, horizon, batch, LR) points, each an ordinary training run, run locally and
  restartably.
- `fit`: the statistics, pure functions of a sweep's points: the optimum per width, depth and horizon, its drift
  across widths (and depths), the horizon fit and the verdicts.
- `report`: a sweep's plan and results read into a report: the loss grid, the optima, the fits, the verdicts
  and warnings.
- `report_text`, `report_plot`: a report as tables, and as plots (the only report module on matplotlib).
- `apply_lr`: write the transferred LR into a target config, where transfer applies.
- `paper_table`: the paper's ablation rows, and what our own table measured for each (which `apply_lr` cites).
- `coord_check`: activation sizes against width (or depth) over the first steps (flat under μP; in depth, under
  CompleteP).

May import: `pretrain.training`, `pretrain.data`, `pretrain.model` and the base modules. Never export or tools.
"""
