"""The Slurm adapter: the only module that calls sbatch. `pretrain submit` validates a config here, then hands
it to `slurm/train.sbatch`; `pretrain sweep --slurm` submits `slurm/sweep.sbatch` as a job array.

The batch scripts also ask two questions of a config or run dir, answered by this module so that no YAML
logic lives in shell:

    python -m pretrain.tools.slurm run-dir CONFIG [overrides]   print train.out_dir of the resolved config
    python -m pretrain.tools.slurm finished RUN_DIR             exit 0 if the newest checkpoint is the last step
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..bundled import slurm_script
from ..config import load_config
from ..data.shards import Work
from ..errors import ExitCode, UserError
from ..training.checkpoint import latest_checkpoint, read_trainer_state
from ..transfer.sweep import Plan

TRAIN_SCRIPT = slurm_script("train.sbatch")
SWEEP_SCRIPT = slurm_script("sweep.sbatch")
PREPARE_SCRIPT = slurm_script("prepare.sbatch")
LOG_PATTERN = "slurm-%j.log"  # sbatch fills in the job id; train.sbatch appends to the same file


class SlurmError(UserError, RuntimeError):
    """sbatch is missing or refused the job; the message carries its answer."""


@dataclass
class Submission:
    job_id: str
    log: Path


def sbatch_command(config: str, overrides: list[str], sbatch_args: list[str], run_dir: Path) -> list[str]:
    """`sbatch [ours] [the user's] slurm/train.sbatch CONFIG [overrides]`: sbatch takes the last of a repeated
    option, so the user's options win over ours as well as over the script's #SBATCH defaults."""
    ours = ["--parsable", f"--job-name={run_dir.name}", f"--output={run_dir / LOG_PATTERN}"]
    return ["sbatch", *ours, *sbatch_args, str(TRAIN_SCRIPT), config, *overrides]


def submit(config: str, overrides: list[str], sbatch_args: list[str]) -> Submission:
    """Validate the config here (a bad key fails now, not after hours in the queue), then submit it."""
    run_dir = Path(load_config(config, overrides).train.out_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)  # sbatch cannot open a log in a folder that does not exist
    job_id = _sbatch(sbatch_command(config, overrides, sbatch_args, run_dir))
    return Submission(job_id, run_dir / LOG_PATTERN.replace("%j", job_id))


def sweep_command(plan: Plan, indices: list[int], max_concurrent: int) -> list[str]:
    """A job array of the points `indices`, at most `max_concurrent` running at once."""
    # consecutive indices as ranges (Slurm's `0-5,9,12-13`): the new points of a grown sweep are one range
    runs = [[i for _, i in run] for _, run in itertools.groupby(enumerate(sorted(indices)), lambda p: p[1] - p[0])]
    spec = ",".join(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]) for run in runs)
    return ["sbatch", f"--array={spec}%{max_concurrent}", str(SWEEP_SCRIPT), plan.dir]


def submit_sweep(plan: Plan, indices: list[int], max_concurrent: int) -> str:
    """Submit the points `indices` of the sweep (all of a new one, the new ones of a grown one) as a job array;
    returns sbatch's answer (the job id)."""
    return _sbatch(sweep_command(plan, indices, max_concurrent))


def submit_prepare(config: str, overrides: list[str], tasks: int, work: Work, sbatch_args: list[str]) -> str:
    """Data preparation as a job array of `tasks` tasks (task I prepares every `tasks`-th unfinished slice from
    I) and a job that finalizes once the array is over, whatever its outcome (it names any slice missing).
    Logs go to DATA_CACHE/logs/. Returns what was submitted, in words."""
    logs = Path(work.cfg.cache_dir).resolve() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    arguments = [str(PREPARE_SCRIPT), config, *overrides]
    array = _sbatch(["sbatch", "--parsable", f"--array=0-{tasks - 1}", f"--output={logs}/prepare-%A_%a.log",
                     *sbatch_args, *arguments, "--tasks", str(tasks)])
    final = _sbatch(["sbatch", "--parsable", f"--dependency=afterany:{array}", f"--output={logs}/prepare-%j.log",
                     *sbatch_args, *arguments, "--finalize"])
    return (f"submitted job array {array} ({tasks} tasks over {len(work.pieces())} slices) and finalize job {final}; "
            f"logs in {logs}; a failed task reruns alone with sbatch --array=I {PREPARE_SCRIPT} {config} "
            f"{' '.join(overrides)} --tasks {tasks}".rstrip())


def _sbatch(command: list[str]) -> str:
    script = next(arg for arg in command if arg.endswith(".sbatch"))
    if not Path(script).is_file():
        raise SlurmError(f"{script} not found: the package was installed without its slurm/ scripts; reinstall it")
    try:
        proc = subprocess.run(command, capture_output=True, text=True)
    except FileNotFoundError:
        raise SlurmError("sbatch is not on PATH: submit from a Slurm login node (or start "
                         "slurm/local-cluster.sh and export the SLURM_CONF it prints)") from None
    if proc.returncode:
        raise SlurmError(f"sbatch refused the job ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout.strip().split(";")[0]  # with --parsable, "ID" or "ID;CLUSTER": the ID


def finished(run_dir: Path) -> bool:
    """Whether the run's newest complete checkpoint is its last step (train.steps of the run's own config)."""
    last = latest_checkpoint(run_dir / "checkpoints")
    steps = load_config(run_dir / "config.yaml").train.steps
    return last is not None and read_trainer_state(last)["step"] >= steps


def _main(argv: list[str]) -> int:
    try:
        match argv:
            case ["run-dir", config, *overrides]:
                print(load_config(config, overrides).train.out_dir)
                return ExitCode.OK
            case ["finished", run_dir]:
                return ExitCode.OK if finished(Path(run_dir)) else ExitCode.FAILED
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print("usage: python -m pretrain.tools.slurm run-dir CONFIG [overrides] | finished RUN_DIR", file=sys.stderr)
    return ExitCode.USER_ERROR


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
