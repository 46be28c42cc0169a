"""μ-Transfer: find the optimal LR on small proxies and carry it to the target.

- `sweep`: a plan of (width, horizon, batch, LR) points, each an ordinary training run, run locally and restartably.
- `fit`: the statistics, pure functions of a sweep's points: the optimum per width and horizon, its drift
  across widths, the horizon fit and the verdict.
- `report`: a sweep's plan and results read into a report: the loss grid, the optima, both fits, a verdict
  and warnings.
- `report_text`, `report_plot`: a report as tables, and as plots (the only report module on matplotlib).
- `apply_lr`: write the transferred LR into a target config, where transfer applies.
- `coord_check`: activation sizes against width over the first steps (flat under μP).

May import: `pretrain.training`, `pretrain.data`, `pretrain.model` and the base modules. Never export or tools.
"""
