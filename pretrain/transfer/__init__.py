"""μ-Transfer: find the optimal LR on small proxies and carry it to the target.

- `sweep`: a plan of (width, LR) points, each an ordinary training run, run locally and restartably.
- `report`: the fitted optimum per width, its drift across widths, a verdict and a plot.
- `apply_lr`: write the transferred LR into a target config, where transfer applies.
- `coord_check`: activation sizes against width over the first steps (flat under μP).

May import: `pretrain.training`, `pretrain.data`, `pretrain.model` and the base modules. Never export or tools.
"""
