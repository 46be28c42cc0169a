"""Checkpoints as untrusted input: a pickle payload in any file a checkpoint holds is refused, by every entry
point, with one line naming the file, and never runs; damaged files (truncated, replaced, bit-flipped, missing,
extra) are found by their checksums; resume=auto falls back to the newest intact checkpoint and reproduces the
uninterrupted run from there. A disk that fills up during a save is one line, and the previous checkpoint stays."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pretrain import load_model
from pretrain.cli import main
from pretrain.errors import CheckpointError
from pretrain.fileio import checksum
from pretrain.training.checkpoint import list_checkpoints, step_dir_name, verify_checkpoint
from pretrain.training.engine import CHECKSUMS, UNIVERSAL_DIR
from tests.helpers import ROOT, losses, pretrain, small_run

pytestmark = pytest.mark.slow

RUN = ["train.steps=6", "train.checkpoint_every=2", "train.keep_checkpoints=3", "train.micro_batch_size=4",
       "train.global_batch_size=8", "train.eval_every=100"]


class Payload:
    """What an attacker would plant: unpickling it calls os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def train(out: Path, cache: Path, *extra: str, nproc: int = 1, check: bool = True) -> subprocess.CompletedProcess:
    args = ["train", "configs/tiny.yaml", *small_run(out, cache, *RUN, *extra)]
    if nproc == 1:
        return pretrain(*args, check=check)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "pretrain", *args]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert not check or proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache) -> dict[str, Path]:
    """A one-process ZeRO-1 run and a two-process ZeRO-2 run, checkpointed at steps 2, 4 and 6."""
    root = tmp_path_factory.mktemp("runs")
    train(root / "zero1", cache, "deepspeed.zero_stage=1")
    train(root / "zero2x2", cache, "deepspeed.zero_stage=2", nproc=2)
    return {"zero1": root / "zero1", "zero2x2": root / "zero2x2"}


def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def rehash(checkpoint: Path, name: str) -> None:
    """Record `name`'s current checksum, as an attacker who also rewrites checksums.json would."""
    manifest = json.loads((checkpoint / CHECKSUMS).read_text())
    manifest[name] = checksum(checkpoint / name)
    (checkpoint / CHECKSUMS).write_text(json.dumps(manifest))


def plant(checkpoint: Path, name: str, marker: Path) -> Path:
    """Put a payload into the torch file `name` of `checkpoint` (its other contents kept), checksums updated."""
    path = checkpoint / name
    state = torch.load(path, weights_only=False)
    state["payload"] = Payload(marker)
    torch.save(state, path)
    if (checkpoint / CHECKSUMS).exists():
        rehash(checkpoint, name)
    return path


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def cli_error(capsys, *argv: str) -> str:
    assert main(list(argv)) == 2
    (line,) = error_lines(capsys.readouterr().err)
    return line


@pytest.mark.parametrize("name", ["ds/mp_rank_00_model_states.pt", "ds/zero_pp_rank_0_mp_rank_00_optim_states.pt",
                                  "rng/rank0.pt"])
def test_a_payload_is_refused_on_resume_and_never_runs(runs, tmp_path, cache, name):
    run = copy_run(runs["zero1"], tmp_path / "run")
    marker = tmp_path / "PWNED"
    bad = plant(run / "checkpoints" / step_dir_name(6), name, marker)
    for resume in ("auto", str(bad.parents[1 if name.startswith("ds/") else 1])):
        proc = train(run, cache, "deepspeed.zero_stage=1", "train.steps=8", f"train.resume={resume}", check=False)
        assert proc.returncode == 2, proc.stderr[-2000:]
        (line,) = error_lines(proc.stderr)
        assert str(bad) in line and "refused" in line and "could run as code" in line
    assert not marker.exists()


def test_a_payload_is_refused_by_consolidate_export_and_load_model(runs, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    for name in ("ds/mp_rank_00_model_states.pt", "ds/zero_pp_rank_0_mp_rank_00_optim_states.pt"):
        checkpoint = copy_run(runs["zero1"], tmp_path / name.replace("/", "_")) / "checkpoints" / step_dir_name(6)
        bad = plant(checkpoint, name, marker)
        for argv in (["consolidate", str(checkpoint), str(tmp_path / "w.safetensors")],
                     ["export-hf", str(checkpoint), str(tmp_path / "hf")]):
            line = cli_error(capsys, *argv)
            assert str(bad) in line and "refused" in line, line
        with pytest.raises(CheckpointError, match="refused"):
            load_model(checkpoint)
    assert not marker.exists()


def test_a_payload_is_refused_when_resuming_at_another_world_size(runs, tmp_path, cache):
    """Two processes wrote the checkpoint, one resumes it: the universal conversion and the universal files
    are read as data too."""
    marker = tmp_path / "PWNED"
    run = copy_run(runs["zero2x2"], tmp_path / "run")
    bad = plant(run / "checkpoints" / step_dir_name(6), "ds/zero_pp_rank_1_mp_rank_00_optim_states.pt", marker)
    proc = train(run, cache, "deepspeed.zero_stage=2", "train.steps=8", check=False)
    assert proc.returncode == 2 and str(bad) in error_lines(proc.stderr)[0], proc.stderr[-2000:]

    clean = copy_run(runs["zero2x2"], tmp_path / "clean")
    train(clean, cache, "deepspeed.zero_stage=2", "train.steps=7")  # converts step 6, then trains step 7
    checkpoint = clean / "checkpoints" / step_dir_name(6)
    universal = checkpoint / UNIVERSAL_DIR
    exp_avg = sorted(universal.rglob("exp_avg.pt"))[0]
    torch.save({"param": torch.load(exp_avg, weights_only=False)["param"], "payload": Payload(marker)}, exp_avg)
    rehash(universal, exp_avg.relative_to(universal).as_posix())
    proc = train(clean, cache, "deepspeed.zero_stage=2", "train.steps=8", f"train.resume={checkpoint}",
                 check=False)
    assert proc.returncode == 2 and str(exp_avg) in error_lines(proc.stderr)[0], proc.stderr[-2000:]
    assert not marker.exists()


@pytest.mark.parametrize("damage, found", [
    ("truncate", "bytes when it was saved (truncated or replaced)"),
    ("random", "its contents changed since it was saved"),
    ("flip", "its contents changed since it was saved"),
    ("delete", "missing (the checkpoint's checksums list it)"),
    ("extra", "not written by the checkpoint's save"),
])
def test_damage_is_found_by_consolidate_and_export(runs, tmp_path, capsys, damage, found):
    checkpoint = copy_run(runs["zero1"], tmp_path / "run") / "checkpoints" / step_dir_name(6)
    target = checkpoint / "ds" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    data = bytearray(target.read_bytes())
    if damage == "truncate":
        target.write_bytes(data[:-100])
    elif damage == "random":
        target.write_bytes(os.urandom(len(data)))
    elif damage == "flip":  # one bit inside tensor data: torch would load it without complaint
        data[len(data) // 2] ^= 0x01
        target.write_bytes(data)
        torch.load(target, weights_only=False)
    elif damage == "delete":
        target.unlink()
    else:
        target = checkpoint / "ds" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
        shutil.copy(checkpoint / "ds" / "zero_pp_rank_0_mp_rank_00_optim_states.pt", target)
    for argv in (["consolidate", str(checkpoint), str(tmp_path / "w.safetensors")],
                 ["export-hf", str(checkpoint), str(tmp_path / "hf")]):
        line = cli_error(capsys, *argv)
        assert str(target) in line and found in line, line


def test_a_trainer_state_without_a_key_is_one_line(runs, tmp_path, capsys):
    checkpoint = copy_run(runs["zero1"], tmp_path / "run") / "checkpoints" / step_dir_name(6)
    state = json.loads((checkpoint / "trainer.json").read_text())
    del state["world_size"]
    (checkpoint / "trainer.json").write_text(json.dumps(state))
    rehash(checkpoint, "trainer.json")
    line = cli_error(capsys, "consolidate", str(checkpoint), str(tmp_path / "w.safetensors"))
    assert "trainer.json: world_size must be an integer >= 1, got None" in line


def test_resume_auto_skips_a_damaged_newest_checkpoint_and_reproduces_the_run(runs, tmp_path, cache):
    run = copy_run(runs["zero1"], tmp_path / "run")
    newest = run / "checkpoints" / step_dir_name(6) / "ds" / "mp_rank_00_model_states.pt"
    data = bytearray(newest.read_bytes())
    data[-1000] ^= 0xFF
    newest.write_bytes(data)
    proc = train(run, cache, "deepspeed.zero_stage=1", "train.steps=6")
    warnings = [line for line in proc.stdout.splitlines() if line.startswith("warning: skipping a damaged")]
    assert len(warnings) == 1 and str(newest) in warnings[0]
    assert "resumed from" in proc.stdout and step_dir_name(4) in proc.stdout
    assert losses(run) == losses(runs["zero1"])  # steps 5 and 6 again, exactly
    assert main(["consolidate", str(run), str(tmp_path / "w.safetensors")]) == 0  # step 6 rewritten, intact


def test_an_explicitly_named_damaged_checkpoint_is_an_error(runs, tmp_path, cache):
    run = copy_run(runs["zero1"], tmp_path / "run")
    checkpoint = run / "checkpoints" / step_dir_name(4)
    (checkpoint / "rng" / "rank0.pt").write_bytes(b"not a tensor file")
    proc = train(run, cache, "deepspeed.zero_stage=1", f"train.resume={checkpoint}", check=False)
    assert proc.returncode == 2
    (line,) = error_lines(proc.stderr)
    assert str(checkpoint / "rng" / "rank0.pt") in line and "bytes when it was saved" in line


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs, mounted for the test (a real file system that fills up; mounting needs root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_previous_checkpoint(small_disk, cache):
    run = small_disk / "run"
    train(run, cache, "train.steps=2")
    (previous,) = list_checkpoints(run / "checkpoints")
    size = sum(f.stat().st_size for f in previous.rglob("*") if f.is_file())
    # leave room for half a checkpoint: the next save fills the disk inside DeepSpeed's (torch's) writer
    (small_disk / "ballast").write_bytes(bytes(shutil.disk_usage(small_disk).free - size // 2))
    proc = train(run, cache, "train.steps=4", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = error_lines(proc.stderr)
    assert line.startswith(f"error: {run / 'checkpoints' / step_dir_name(4)}: cannot save the checkpoint, no space "
                           "left on the device (")
    assert " free of 64 MiB there after removing the partial save); the previous checkpoint " in line
    assert f"{previous} (" in line and line.endswith("is intact. Free space (train.keep_checkpoints keeps fewer), "
                                                     "then resume")
    assert [p.name for p in (run / "checkpoints").iterdir()] == [previous.name]  # no staging directory
    assert verify_checkpoint(previous) == previous
