"""The Slurm launchers, run for real: a two-node Slurm cluster on this machine (slurm/local-cluster.sh) is
started for this module and stopped after it, and the jobs are the real slurm/*.sbatch scripts training tiny
models on CPU: training runs on both nodes, one rank each, as it would on two GPU nodes."""

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pretrain.training.checkpoint import list_checkpoints
from pretrain.training.metrics import read_metrics
from tests.helpers import ROOT, small_run

LOCAL_CLUSTER = ROOT / "slurm" / "local-cluster.sh"
NODES = 2
STEPS = 200  # long enough (~10 s of training) that a signal sent mid-run arrives before the last step
TRAIN = [f"train.steps={STEPS}", "train.checkpoint_every=100"]
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}
JOB_TIMEOUT = 300  # seconds; a tiny job takes ~20 here

pytestmark = [pytest.mark.slow, pytest.mark.slurm]


def _free_ports(count: int) -> int:
    """A port p with p + 1, ..., p + count - 1 also free (slurmctld, the slurmds): a cluster someone already
    runs on this machine is left alone."""
    for _ in range(50):
        with contextlib.ExitStack() as stack:
            sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
            sockets[0].bind(("127.0.0.1", 0))
            port = sockets[0].getsockname()[1]
            try:
                for offset, sock in enumerate(sockets[1:], start=1):
                    sock.bind(("127.0.0.1", port + offset))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no {count} consecutive free ports")


def require(*tools: str) -> None:
    """Skip with the reason where the tools are missing (scripts/test.sh installs them when it runs as root);
    fail instead under PRETRAIN_REQUIRE_SLURM=1, as in CI, so that a missing tool there is never a silent pass."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        message = f"{', '.join(missing)} not installed (apt-get install slurmctld slurmd munge shellcheck)"
        if os.environ.get("PRETRAIN_REQUIRE_SLURM") == "1":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> dict[str, str]:
    """Start a private cluster; yield the environment that points sbatch, squeue etc. at it."""
    require("munged", "slurmctld", "slurmd", "sbatch")
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_"))}
    env = {**inherited, "PRETRAIN_SLURM_DIR": str(tmp_path_factory.mktemp("slurm")),
           "PRETRAIN_SLURM_NODES": str(NODES),
           "PRETRAIN_SLURM_PORT": str(_free_ports(NODES + 1)), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           # the scripts' #SBATCH defaults are for a GPU cluster; the local node is CPU-only
           "SBATCH_PARTITION": "local", "SBATCH_GPUS_PER_NODE": "0"}
    env["SLURM_CONF"] = f"{env['PRETRAIN_SLURM_DIR']}/slurm.conf"
    start = subprocess.run([LOCAL_CLUSTER, "start"], env=env, capture_output=True, text=True, timeout=120)
    assert start.returncode == 0, f"local-cluster.sh start failed:\n{start.stdout}\n{start.stderr}"
    yield env
    stop = subprocess.run([LOCAL_CLUSTER, "stop"], env=env, capture_output=True, text=True, timeout=120)
    assert stop.returncode == 0, f"local-cluster.sh stop failed:\n{stop.stdout}\n{stop.stderr}"


def run(env: dict[str, str], *args: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    if check and proc.returncode:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def pretrain(env: dict[str, str], *args: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    return run(env, sys.executable, "-m", "pretrain", *args, check=check)


def jobs(env: dict[str, str], *job_id: str) -> list[dict[str, str]]:
    """`scontrol show job [ID]` as one dict per job (an array job: one per task); no ID: every job."""
    out = run(env, "scontrol", "--oneliner", "show", "job", *job_id).stdout
    return [dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.splitlines() if "JobId=" in line]


def tail(log: Path, lines: int = 40) -> str:
    text = log.read_text(errors="replace").replace("\r", "\n") if log.exists() else "(no log yet)"
    return f"--- {log} ---\n" + "\n".join(text.splitlines()[-lines:])


def wait_for(condition: Callable[[], bool], what: str, log: Path, timeout: float = JOB_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tail(log)}")
        time.sleep(0.5)


def wait_until_ended(env: dict[str, str], job_id: str, log: Path) -> list[dict[str, str]]:
    wait_for(lambda: all(j["JobState"] in ENDED for j in jobs(env, job_id)), f"job {job_id} to end", log)
    records = jobs(env, job_id)
    failed = [f"{j['JobId']}: {j['JobState']}" for j in records if j["JobState"] != "COMPLETED"]
    assert not failed, f"job {job_id} did not complete ({', '.join(failed)})\n{tail(log)}"
    return records


def submit(env: dict[str, str], out: Path, cache: Path, *extra: str) -> tuple[str, Path]:
    """`pretrain submit` a tiny training run; returns the job id and its log."""
    proc = pretrain(env, "submit", "configs/tiny.yaml", *small_run(out, cache, *TRAIN, *extra),
                    "--", f"--nodes={NODES}", "--time=00:15:00")  # longer than the USR1 lead (10 min)
    match = re.fullmatch(r"submitted job (\d+); log: (\S+)", proc.stdout.strip())
    assert match, proc.stdout
    return match[1], Path(match[2])


@pytest.fixture(scope="module")
def uninterrupted(cluster, cache, tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    """A training job that runs to the end: (run dir, its log, its scontrol record)."""
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    job_id, log = submit(cluster, out, cache)
    (record,) = wait_until_ended(cluster, job_id, log)
    return out, log, record


def test_training_job_completes_with_a_checkpoint(uninterrupted):
    out, log, record = uninterrupted
    assert log.parent == out and log.name == f"slurm-{record['JobId']}.log"
    assert record["TimeLimit"] == "00:15:00" and record["Partition"] == "local"  # sbatch options passed through
    assert record["JobName"] == "run" and record["Restarts"] == "0"
    assert [p.name for p in list_checkpoints(out / "checkpoints")][-1] == f"step_{STEPS:08d}"
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == list(range(1, STEPS + 1))
    text = log.read_text()
    assert f"job {record['JobId']} (restart 0) on {NODES} node(s)" in text and "trainer exited with status 0" in text
    assert f"world size {NODES}" in text and "requeueing" not in text
    assert record["NumNodes"] == str(NODES) and len(list((out / "checkpoints").glob("*/rng/rank*.pt"))) == 2 * NODES


def test_usr1_checkpoints_requeues_and_resumes_to_the_same_losses(cluster, cache, uninterrupted, tmp_path):
    out = tmp_path / "run"
    job_id, log = submit(cluster, out, cache, "wandb.mode=offline")
    wait_for(lambda: len(read_metrics(out / "metrics.jsonl")) >= 20, "the trainer to take 20 steps", log)
    run_id = (out / "wandb_run_id").read_text()
    run(cluster, "scancel", "--signal=USR1", "--batch", job_id)

    # Slurm holds a requeued job for ~2 minutes before it may start again; release it sooner. Not at once: a
    # start in the same second as the requeue finds the job's launch credential revoked (the old run's).
    def requeued_and_released() -> bool:
        (record,) = jobs(cluster, job_id)
        if record["Restarts"] == "0":
            return False
        if record["JobState"] == "PENDING":
            return run(cluster, "scontrol", "update", f"JobId={job_id}", "StartTime=now+2", check=False).returncode == 0
        return record["JobState"] in ("RUNNING", "COMPLETED")

    wait_for(requeued_and_released, f"job {job_id} to be requeued", log)
    (record,) = wait_until_ended(cluster, job_id, log)

    text = log.read_text()
    assert record["Restarts"] == "1", text
    stopped_at = int(re.search(r"resumed from \S+ at step (\d+)", text)[1])
    assert 20 <= stopped_at < STEPS, f"the stop came too late to test resume (step {stopped_at})"
    for line in ("USR1 (time limit or preemption near)", "requeueing job", f"job {job_id} (restart 1)"):
        assert line in text, f"{line!r} missing\n{tail(log)}"
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl")]
    assert steps == list(range(1, STEPS + 1)), "each step must be logged exactly once"
    reference = {r["step"]: r["loss"] for r in read_metrics(uninterrupted[0] / "metrics.jsonl")}
    assert {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl")} == reference  # identical on CPU
    assert (out / "wandb_run_id").read_text() == run_id, "the requeued job must continue the same W&B run"
    assert not (out / "STOP").exists()


def test_sweep_array_runs_every_point_and_report_reads_it(cluster, cache, tmp_path):
    sweep = tmp_path / "sweep"
    proc = pretrain(cluster, "sweep", "configs/tiny.yaml", "--widths", "32,64", "--lrs", "2^-8,2^-6", "--out", sweep,
                    "--slurm", "--max-concurrent", "2", *small_run(tmp_path / "unused", cache, "train.steps=20"))
    job_id = re.search(r"Submitted batch job (\d+)", proc.stdout)[1]
    log = sweep / "logs" / f"slurm-{job_id}_0.log"
    tasks = wait_until_ended(cluster, job_id, log)
    assert sorted(int(t["ArrayTaskId"]) for t in tasks) == [0, 1, 2, 3]
    assert {t["ArrayTaskThrottle"] for t in tasks} == {"2"}  # --max-concurrent became the array's %2
    plan = json.loads((sweep / "plan.json").read_text())
    for point in plan["points"]:
        assert json.loads((Path(point["out_dir"]) / "result.json").read_text())["status"] == "ok", point

    report = json.loads(pretrain(cluster, "report", sweep, "--json").stdout)
    grid = sorted((row["width"], row["lr"]) for row in report["grid"])
    assert grid == [(w, 2.0**e) for w in (32, 64) for e in (-8, -6)]
    assert all(row["status"] == "ok" for row in report["grid"]) and len(report["optima"]) == 2

    # a failed point is rerun alone, as its own one-task array
    rerun = Path(plan["points"][1]["out_dir"]) / "result.json"
    rerun.unlink()
    again = run(cluster, "sbatch", "--parsable", "--array=1", ROOT / "slurm" / "sweep.sbatch", sweep).stdout.strip()
    (task,) = wait_until_ended(cluster, again, sweep / "logs" / f"slurm-{again}_1.log")
    assert task["ArrayTaskId"] == "1" and json.loads(rerun.read_text())["status"] == "ok"


def test_submit_refuses_a_bad_config_before_sbatch(cluster, tmp_path):
    before = [j["JobId"] for j in jobs(cluster)]
    out = tmp_path / "run"
    proc = pretrain(cluster, "submit", "configs/tiny.yaml", "model.d_modle=64", f"train.out_dir={out}", check=False)
    assert proc.returncode == 2 and "model.d_modle: unknown key (did you mean model.d_model?)" in proc.stderr
    assert [j["JobId"] for j in jobs(cluster)] == before and not out.exists(), "no job may be created for it"


def test_submit_reports_what_sbatch_refused(cluster, tmp_path):
    proc = pretrain(cluster, "submit", "configs/tiny.yaml", f"train.out_dir={tmp_path / 'run'}", "--",
                    "--partition=no-such-partition", check=False)
    assert proc.returncode == 2 and "sbatch refused the job" in proc.stderr, proc.stderr
    assert "invalid partition" in proc.stderr.lower(), proc.stderr


def test_scripts_are_shellcheck_clean():
    require("shellcheck")
    scripts = sorted(p for folder in ("slurm", "scripts") for p in (ROOT / folder).iterdir()
                     if p.suffix in (".sh", ".sbatch")) + [ROOT / ".ci" / "run"]
    assert {p.name for p in scripts} >= {"train.sbatch", "sweep.sbatch", "local-cluster.sh", "test.sh", "run"}
    proc = subprocess.run(["shellcheck", "--shell=bash", *scripts], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout


def test_data_prepared_by_a_job_array_has_the_rows_of_one_process(cluster, tmp_path):
    """Three array tasks and a finalize job on the two-node cluster write the same bytes as one local process."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(2500):  # three slices of text files
        (corpus / f"{i:05d}.txt").write_text(f"document {i}: " + " ".join(f"w{(i * j) % 193}" for j in range(40)))
    data = [f"data.source={corpus}", "data.vocab_size=300", "data.seq_len=16", "data.val_fraction=0.1"]
    proc = pretrain(cluster, "prepare-data", "configs/tiny.yaml", *data, f"data.cache_dir={tmp_path / 'array'}",
                    "--slurm", "--tasks", "3", "--", "--cpus-per-task=1")
    match = re.search(r"submitted job array (\d+) \(3 tasks over 3 slices\) and finalize job (\d+); logs in (\S+);",
                      proc.stdout)
    assert match, proc.stdout
    array, final, logs = match[1], match[2], Path(match[3])
    tasks = wait_until_ended(cluster, array, logs / f"prepare-{array}_0.log")
    assert sorted(int(t["ArrayTaskId"]) for t in tasks) == [0, 1, 2]
    wait_until_ended(cluster, final, logs / f"prepare-{final}.log")
    pretrain(cluster, "prepare-data", "configs/tiny.yaml", *data, f"data.cache_dir={tmp_path / 'local'}")

    def prepared(cache: Path) -> dict[str, bytes]:
        (folder,) = [p for p in cache.iterdir() if p.is_dir() and p.name.startswith("text-")]
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

    by_array, by_one = prepared(tmp_path / "array"), prepared(tmp_path / "local")
    assert sum(name.startswith("shards/") for name in by_array) == 6 and by_array == by_one
