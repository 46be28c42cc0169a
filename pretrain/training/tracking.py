"""Weights & Biases logging for rank 0, behind the trainer's logger interface (`log(metrics, step)`, `close`).

Identity: `wandb.project/entity/group/name/tags` from the config. A field left at its default yields to W&B's
own environment variable (WANDB_PROJECT, WANDB_ENTITY, WANDB_RUN_GROUP, WANDB_NAME, WANDB_TAGS); with neither,
the run is named after its run dir. A sweep gives all its points one group.

Mode: `online`, `offline` or `disabled` as set. `auto` goes online only when an API key is configured
(WANDB_API_KEY, or a netrc entry for the W&B host); otherwise offline, with a hint to `wandb sync` later.
WANDB_MODE=offline or disabled in the environment also applies to `auto`.

One run dir is one W&B run: its id is kept in OUT/wandb_run_id and reused (resume="allow") when training
resumes from a checkpoint, so a requeued job continues the same run. W&B's files go under OUT/wandb/.
Only the resolved config and the trainer's metrics are sent; the API key stays with wandb's own login.
"""

from __future__ import annotations

import netrc
import os
import secrets
from pathlib import Path
from urllib.parse import urlparse

from ..config import Config, WandbConfig
from ..fileio import write_text
from .metrics import JsonlLogger, MetricsLogger, MultiLogger

RUN_ID_FILE = "wandb_run_id"


class WandbLogger:
    """Sends each step's metrics to a W&B run at `step=global_step`."""

    def __init__(self, run):
        self.run = run

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        import wandb

        self.run.finish()
        wandb.teardown()  # waits until wandb's service has written everything (finish alone may not)


def build_logger(cfg: Config, out: Path, resume_step: int) -> MetricsLogger:
    """Rank 0's logger: metrics.jsonl in the run dir, plus W&B unless `wandb.mode` resolves to disabled."""
    jsonl = JsonlLogger(out / "metrics.jsonl", resume_step=resume_step)
    if wandb_mode(cfg.wandb) == "disabled":
        return jsonl
    return MultiLogger(jsonl, build_wandb_logger(cfg, out, resume_step))


def build_wandb_logger(cfg: Config, out: Path, resume_step: int) -> WandbLogger:
    import wandb

    mode = wandb_mode(cfg.wandb)
    run = wandb.init(
        mode=mode, dir=out, id=_run_id(out, resume_step), resume="allow", config=cfg.to_dict(),
        project=_project(cfg.wandb), entity=cfg.wandb.entity,
        group=cfg.wandb.group, tags=cfg.wandb.tags or None,
        name=cfg.wandb.name or os.environ.get("WANDB_NAME") or out.resolve().name,
        settings=wandb.Settings(silent=mode == "offline"),  # offline says it in one line, below
    )
    if mode == "offline":
        print(f"wandb: logging offline; upload later with: wandb sync {run.settings.sync_dir}", flush=True)
    return WandbLogger(run)


def wandb_mode(cfg: WandbConfig) -> str:
    """The mode `wandb.init` gets; `auto` resolves to `online` only when an API key is configured."""
    if cfg.mode != "auto":
        return cfg.mode
    if os.environ.get("WANDB_MODE") in ("offline", "disabled"):
        return os.environ["WANDB_MODE"]
    return "online" if has_api_key() else "offline"


def has_api_key() -> bool:
    """Whether wandb could log in without asking: WANDB_API_KEY, or a netrc entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _run_id(out: Path, resume_step: int) -> str:
    """The run dir's W&B id: kept when resuming from a checkpoint, new when training starts from step 0."""
    path = out / RUN_ID_FILE
    if resume_step > 0 and path.exists():
        return path.read_text().strip()
    run_id = secrets.token_hex(4)  # W&B ids are short lowercase alphanumerics
    write_text(path, run_id + "\n")
    return run_id


def _project(cfg: WandbConfig) -> str:
    """The config's project, unless it was left at the default and WANDB_PROJECT names one."""
    if cfg.project == WandbConfig().project:
        return os.environ.get("WANDB_PROJECT") or cfg.project
    return cfg.project
