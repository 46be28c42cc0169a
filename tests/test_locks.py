"""One process at a time: the locks of `pretrain.locks` between real processes, and the run directory's lock and
`train.resume=never` through the real `pretrain train`."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from pretrain.locks import Holder, Lock, LockHeld
from tests.helpers import ROOT, pretrain, small_run

HOLD = ("import sys, time; from pretrain.locks import Lock; Lock(sys.argv[1]).take(); print('held', flush=True); "
        "time.sleep(600)")


def holding(path) -> subprocess.Popen:
    """Another process holding the lock at `path`, until it is killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "held\n"
    return proc


def killed(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL


def test_a_held_lock_names_its_holder_and_is_free_once_the_holder_is_killed(tmp_path):
    path = tmp_path / "lock"
    holder = holding(path)
    with pytest.raises(LockHeld) as held:
        Lock(path).take()
    assert (held.value.holder.pid, held.value.holder.host) == (holder.pid, socket.gethostname())
    assert abs(held.value.holder.since - time.time()) < 60
    assert f"is held by pid {holder.pid} on host {socket.gethostname()} since " in str(held.value)
    killed(holder)  # no release, no cleanup: the lock file stays, naming a dead process
    assert Holder.read(path).pid == holder.pid and Holder.read(path).is_dead()
    with Lock(path) as lock:
        lock.take()
        assert Holder.read(path).pid == os.getpid()


def test_a_wait_says_for_whom_and_ends_when_the_holder_does(tmp_path):
    path = tmp_path / "lock"
    holder = holding(path)
    waiter = subprocess.Popen([sys.executable, "-c", "import sys; from pretrain.locks import Lock; "
                               "Lock(sys.argv[1]).wait('the test'); print('got it', flush=True)", str(path)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    said = waiter.stdout.readline()
    assert said.startswith(f"waiting for the test: {path} is held by pid {holder.pid} on host {socket.gethostname()} "
                           "since ") and said.endswith(" UTC\n"), said
    assert waiter.poll() is None
    killed(holder)
    assert waiter.stdout.readline() == "got it\n"
    assert waiter.wait(timeout=60) == 0


def test_a_lock_is_taken_once_per_holder_and_released_at_the_end_of_its_block(tmp_path):
    path = tmp_path / "lock"
    with Lock(path) as lock:
        lock.take()
        with pytest.raises(LockHeld):  # another open of the file, even in this process
            Lock(path).take()
        with pytest.raises(RuntimeError, match="already held by this object"):
            lock.take()
    Lock(path).take()


# The run directory.

def started(out, cache, *extra: str) -> subprocess.Popen:
    """`pretrain train` in the background, once it holds its run directory's lock."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pretrain", "train", "configs/tiny.yaml",
                             *small_run(out, cache, "train.steps=1000", *extra)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while Holder.read(out / ".lock").pid != proc.pid or not (out / "config.yaml").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it took its lock"
        time.sleep(0.05)
    return proc


@pytest.mark.slow
def test_a_second_run_in_a_directory_fails_at_once_naming_the_first_and_a_killed_one_blocks_nothing(tmp_path,
                                                                                                     cache):
    out = tmp_path / "run"
    first = started(out, cache)
    config = (out / "config.yaml").read_text()
    second = pretrain("train", "configs/tiny.yaml", *small_run(out, cache, "train.steps=2", "train.seed=1"),
                      check=False)
    assert second.returncode == 2
    assert second.stderr.splitlines()[-1].startswith(
        f"error: train.out_dir {out}: another `pretrain train` is running there (pid {first.pid} on host "
        f"{socket.gethostname()} since ")
    assert second.stderr.count("error:") == 1 and "Traceback" not in second.stderr
    assert first.poll() is None and (out / "config.yaml").read_text() == config  # the second wrote nothing
    killed(first)
    assert (out / ".lock").exists() and Holder.read(out / ".lock").pid == first.pid
    # the killed run may have saved a checkpoint, which this one resumes: its other seed must be allowed
    pretrain("train", "configs/tiny.yaml", *small_run(out, cache, "train.steps=2", "train.seed=1",
                                                      "train.allow_config_change=true"))
    assert "seed: 1" in (out / "config.yaml").read_text()


@pytest.mark.slow
def test_resume_never_refuses_a_directory_that_holds_a_run(tmp_path, cache):
    out = tmp_path / "run"
    pretrain("train", "configs/tiny.yaml", *small_run(out, cache, "train.steps=2"))
    config, metrics = (out / "config.yaml").read_text(), (out / "metrics.jsonl").read_text()
    again = pretrain("train", "configs/tiny.yaml", *small_run(out, cache, "train.steps=2", "train.resume=never",
                                                              "train.seed=1"), check=False)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert again.stderr.splitlines()[-1] == (
        f"error: train.out_dir {out}: holds a run already (checkpoints or metrics.jsonl), which train.resume=never "
        f"would mix with a new one; choose another train.out_dir, or move {out} away (train.resume=auto continues "
        "that run)")
    assert (out / "config.yaml").read_text() == config and (out / "metrics.jsonl").read_text() == metrics
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    pretrain("train", "configs/tiny.yaml", *small_run(fresh, cache, "train.steps=2", "train.resume=never"))
