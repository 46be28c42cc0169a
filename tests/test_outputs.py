"""Where commands write (`pretrain.outputs`): the command lines that once destroyed their input, each now refused in
one line with every file untouched byte for byte; then, generated for every command that writes, the refusal of
`.`, `..`, an empty path, the wrong kind, a path under a file, a directory nothing can be created in, a path that
is, contains or lies inside an input or a run's checkpoints; and an existing output replaced only where the command
wrote it. Every refusal comes before any work: the commands run in this process, so the cases take seconds."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from pretrain.cli import main
from pretrain.outputs import MARKER
from pretrain.training.checkpoint import latest_checkpoint
from tests.helpers import CONFIGS, mup_like, pretrain, small_run, synthetic_sweep

TINY = str(CONFIGS / "tiny.yaml")


def run(capsys, *argv: str | Path) -> tuple[int, str, str]:
    """The exit status, stdout and stderr of `pretrain ARGV`, run in this process."""
    code = main([str(a) for a in argv])
    printed = capsys.readouterr()
    return code, printed.out, printed.err


def refused(capsys, *argv: str | Path) -> str:
    """The one `error:` line of a command that must exit 2 without a traceback."""
    code, _, err = run(capsys, *argv)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, (argv, code, err[-2000:])
    return errors[0]


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file (its SHA-256) and directory under `roots`, hidden ones included."""
    found = {}
    for root in roots:
        for folder, _, files in os.walk(root):
            found[folder] = "directory"
            found.update({os.path.join(folder, f): hashlib.sha256(Path(folder, f).read_bytes()).hexdigest()
                          for f in files})
    return found


def can_create_in(folder: Path) -> bool:
    try:
        os.rmdir(tempfile.mkdtemp(dir=folder))
    except OSError:
        return False
    return True


@pytest.fixture(autouse=True)
def work(tmp_path, monkeypatch) -> Path:
    """Each test runs in a working directory of its own, so that `.` and `..` are the test's."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


@dataclass(frozen=True)
class Inputs:
    root: Path
    sweep: Path  # a planned sweep whose points have results
    cache: Path  # a data cache (the commands that train read it)
    run: Path  # a run: config.yaml and checkpoints/, which hold a real checkpoint only in `trained`

    @property
    def checkpoint(self) -> Path:
        return latest_checkpoint(self.run / "checkpoints")

    @property
    def sweep_points(self) -> Path:
        return self.sweep / "points"


@pytest.fixture(scope="module")
def sweep_inputs(tmp_path_factory) -> Inputs:
    """Inputs without training: a synthetic sweep, and a run's directory shape around an empty checkpoints/."""
    root = tmp_path_factory.mktemp("inputs")
    synthetic_sweep(root / "sweep", mup_like, widths=(128, 256), lrs="2^-8:2^-6:1")
    (root / "cache").mkdir()
    (root / "run" / "checkpoints").mkdir(parents=True)
    (root / "run" / "config.yaml").write_text("model: {}\n")
    return Inputs(root, root / "sweep", root / "cache", root / "run")


@pytest.fixture(scope="module")
def trained(sweep_inputs, tmp_path_factory) -> Inputs:
    """The same with a real run: one small training run, checkpointed at its last step."""
    root = tmp_path_factory.mktemp("trained")
    pretrain("train", TINY, *small_run(root / "run", sweep_inputs.cache, "train.steps=2", "train.checkpoint_every=2"))
    return Inputs(sweep_inputs.root, sweep_inputs.sweep, sweep_inputs.cache, root / "run")


@pytest.fixture(scope="module")
def unwritable(tmp_path_factory) -> Iterator[Path]:
    """A directory in which nothing can be created: read-only by its mode; where that does not hold (root may
    create anything anywhere), procfs's root, where not even root can. Checked, so the test cannot pass
    vacuously."""
    folder = tmp_path_factory.mktemp("read-only")
    folder.chmod(0o555)
    place = folder if not can_create_in(folder) else Path("/proc")
    assert not can_create_in(place)
    yield place
    folder.chmod(0o755)


# --- the command lines of the issue ----------------------------------------------------------------------------

@pytest.mark.slow
def test_export_into_the_parent_of_the_working_directory_deletes_nothing(trained, tmp_path, work, capsys):
    """`cd parent/work && pretrain export-hf CKPT .. --overwrite` once deleted the whole parent directory."""
    (tmp_path / "notes.txt").write_text("the user's")
    (work / "draft.txt").write_text("the user's too")
    before = snapshot(tmp_path, trained.run)
    line = refused(capsys, "export-hf", trained.checkpoint, "..", "--overwrite")
    assert "contains the working directory" in line
    assert snapshot(tmp_path, trained.run) == before


@pytest.mark.slow
@pytest.mark.parametrize("argv, fragment", [
    (["export-hf", "CKPT", "CKPT", "--overwrite"], "is the checkpoint"),
    (["export-hf", "RUN", "RUN", "--overwrite"], "contains the checkpoint"),
    (["consolidate", "CKPT", "CKPT/trainer.json"], "lies inside the checkpoint"),
    (["consolidate", "CKPT", "CKPT/trainer.json", "--overwrite"], "lies inside the checkpoint"),
], ids=" ".join)
def test_an_output_onto_its_input_is_refused_and_the_input_kept(trained, tmp_path, capsys, argv, fragment):
    """These once replaced the checkpoint with the export, wiped the run, or overwrote a checkpoint's file."""
    run_dir = shutil.copytree(trained.run, tmp_path / "run")
    checkpoint = latest_checkpoint(run_dir / "checkpoints")
    before = snapshot(run_dir)
    paths = {"CKPT": str(checkpoint), "RUN": str(run_dir)}
    line = refused(capsys, *[paths.get(a, a).replace("CKPT/", f"{checkpoint}/") for a in argv])
    assert fragment in line
    assert snapshot(run_dir) == before


@pytest.mark.slow
def test_consolidate_does_not_replace_an_existing_output_unasked(trained, tmp_path, capsys):
    """Not even its own earlier output, nor any other file with --overwrite."""
    out = tmp_path / "weights.safetensors"
    save_file({"earlier": torch.zeros(1)}, out, metadata={"checkpoint": "an earlier one"})
    before = out.read_bytes()
    assert "exists; pass --overwrite to replace it" in refused(capsys, "consolidate", trained.checkpoint, out)
    assert out.read_bytes() == before
    out.write_bytes(b"the user's weights")
    for flags in ([], ["--overwrite"]):
        line = refused(capsys, "consolidate", trained.checkpoint, out, *flags)
        assert "not written by `pretrain consolidate`" in line and "pass --overwrite" not in line
    assert out.read_bytes() == b"the user's weights"


def test_a_sweep_into_a_directory_of_the_users_does_not_overwrite_its_config(sweep_inputs, tmp_path, capsys):
    """`sweep --out` into an existing directory once overwrote the config.yaml there."""
    folder = tmp_path / "experiments"
    folder.mkdir()
    (folder / "config.yaml").write_text("the user's config\n")
    before = snapshot(folder)
    line = refused(capsys, "sweep", TINY, "--widths", "128", "--lrs", "0.01", "--out", folder,
                   f"data.cache_dir={sweep_inputs.cache}")
    assert "not written by `pretrain sweep`" in line and MARKER not in line
    assert snapshot(folder) == before


# --- every command, every refused location ---------------------------------------------------------------------

@dataclass(frozen=True)
class Command:
    kind: str  # what OUT must be: "file" or "directory"
    argv: Callable[[Inputs, str], list]  # the command line writing to OUT
    inputs: tuple[tuple[str, str], ...] = ()  # (Inputs attribute, how refusals name it)
    trained: bool = False  # needs a real checkpoint
    overwrite: bool = True  # replaces its own earlier output (apply-lr edits its target, train resumes its run)


COMMANDS = {
    "export-hf": Command("directory", lambda i, out: ["export-hf", i.checkpoint, out, "--overwrite"],
                         (("checkpoint", "the checkpoint"),), trained=True),
    "consolidate": Command("file", lambda i, out: ["consolidate", i.checkpoint, out, "--overwrite"],
                           (("checkpoint", "the checkpoint"),), trained=True),
    "sweep": Command("directory", lambda i, out: ["sweep", TINY, "--widths", "128", "--lrs", "0.01", "--out", out,
                                                  f"data.cache_dir={i.cache}"], (("cache", "the data cache"),)),
    "report": Command("file", lambda i, out: ["report", i.sweep, "--plot", out], (("sweep_points", "the sweep's"),)),
    "coord-check": Command("directory", lambda i, out: ["coord-check", TINY, "--widths", "32,64", "--steps", "1",
                                                        "--seeds", "1", "--out", out, "--overwrite",
                                                        f"data.cache_dir={i.cache}"], (("cache", "the data cache"),)),
    "gpu-check": Command("directory", lambda i, out: ["gpu-check", out, "--dry-run", "--overwrite"]),
    "apply-lr": Command("file", lambda i, out: ["apply-lr", i.sweep, out, "--force"], (("sweep", "the sweep"),),
                        overwrite=False),
    "train": Command("directory", lambda i, out: ["train", TINY, f"train.out_dir={out}", f"data.cache_dir={i.cache}",
                                                  "wandb.mode=disabled"], (("cache", "the data cache"),),
                     overwrite=False),
}
PLACES = ["dot", "dotdot", "empty", "wrong kind", "under a file", "read-only", "in a run's checkpoints"]
RELATIONS: dict[str, Callable[[Path], Path]] = {"is": lambda p: p, "lies inside": lambda p: p / "out",
                                                "contains": lambda p: p.parent}


def location(case: str, command: Command, inputs: Inputs, tmp: Path, unwritable: Path) -> tuple[str, str]:
    """Where `case` puts OUT, and what its refusal says."""
    if case == "dot":
        return ".", "is the working directory"
    if case == "dotdot":
        return "..", "contains the working directory"
    if case == "empty":
        return "", "empty"
    if case == "wrong kind":
        other = tmp / "other"
        if command.kind == "file":
            other.mkdir()
            (other / "keep.txt").write_text("the user's")
            return str(other), "must be a file"
        other.write_text("the user's")
        return str(other), "must be a directory"
    if case == "under a file":
        (tmp / "file").write_text("the user's")
        return str(tmp / "file" / "out"), "which is a file"
    if case == "read-only":
        return str(unwritable / "out"), f"cannot write in {unwritable}"
    if case == "in a run's checkpoints":
        return str(inputs.run / "checkpoints" / "out"), "the checkpoints of the run"
    relation, attribute = case.split(":")
    noun = dict(command.inputs)[attribute]
    return str(RELATIONS[relation](getattr(inputs, attribute))), f"{relation} {noun}"


def cases(needs: Callable[[str, Command], bool] = lambda name, command: True) -> list:
    """(command, case) pairs, those of commands that train marked slow."""
    pairs = []
    for name, command in COMMANDS.items():
        places = PLACES + [f"{relation}:{attribute}" for attribute, _ in command.inputs for relation in RELATIONS]
        marks = [pytest.mark.slow] if command.trained else []
        pairs += [pytest.param(name, case, marks=marks, id=f"{name}-{case}") for case in places if needs(name, command)]
    return pairs


@pytest.mark.parametrize("name, case", cases())
def test_every_command_refuses_every_bad_location_before_writing(request, tmp_path, unwritable, capsys, name, case):
    command = COMMANDS[name]
    inputs = request.getfixturevalue("trained" if command.trained else "sweep_inputs")
    out, fragment = location(case, command, inputs, tmp_path, unwritable)
    before = snapshot(tmp_path, inputs.root, inputs.run)
    line = refused(capsys, *command.argv(inputs, out))
    assert fragment in line and (name != "train" or "train.out_dir" in line), line
    assert snapshot(tmp_path, inputs.root, inputs.run) == before


# --- an existing output ----------------------------------------------------------------------------------------

def foreign(out: Path, kind: str) -> None:
    """What a user keeps at OUT: a file, or a directory holding a config.yaml."""
    if kind == "file":
        out.write_bytes(b"\x89PNG\r\n\x1a\n the user's" if out.suffix == ".png" else b"the user's")
    else:
        out.mkdir()
        (out / "config.yaml").write_text("the user's\n")


def commands(names: list[str]) -> list:
    """Parameters for these commands, those that need a trained run marked slow."""
    return [pytest.param(name, marks=[pytest.mark.slow] if COMMANDS[name].trained else []) for name in names]


@pytest.mark.parametrize("name", commands([n for n, c in COMMANDS.items() if c.overwrite and n != "report"]))
def test_overwrite_never_replaces_what_the_command_did_not_write(request, tmp_path, capsys, name):
    command = COMMANDS[name]
    inputs = request.getfixturevalue("trained" if command.trained else "sweep_inputs")
    out = tmp_path / "out"
    foreign(out, command.kind)
    before = snapshot(tmp_path)
    argv = command.argv(inputs, str(out))
    for flags in (argv, [a for a in argv if a != "--overwrite"]):  # without it, no hint that it would help
        line = refused(capsys, *flags)
        assert f"not written by `pretrain {name}`" in line and "pass --overwrite" not in line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", commands(["export-hf", "coord-check", "gpu-check"]))
def test_an_earlier_output_needs_overwrite(request, tmp_path, capsys, name):
    command = COMMANDS[name]
    inputs = request.getfixturevalue("trained" if command.trained else "sweep_inputs")
    out = tmp_path / "out"
    out.mkdir()
    (out / MARKER).write_text(f"{name}\n")
    (out / "result.json").write_text("{}")
    before = snapshot(tmp_path)
    argv = [a for a in command.argv(inputs, str(out)) if a != "--overwrite"]
    assert "exists and is not empty; pass --overwrite to replace it" in refused(capsys, *argv)
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_export_replaces_only_an_earlier_export(trained, tmp_path, capsys):
    out = tmp_path / "hf"
    out.mkdir()
    (out / MARKER).write_text("export-hf\n")
    (out / "stale.safetensors").write_bytes(b"an earlier export's")
    (tmp_path / "beside.txt").write_text("the user's")
    assert run(capsys, *COMMANDS["export-hf"].argv(trained, str(out)))[0] == 0
    assert (out / "config.json").is_file() and not (out / "stale.safetensors").exists()
    assert (out / MARKER).read_text() == "export-hf\n" and (tmp_path / "beside.txt").read_text() == "the user's"


@pytest.mark.slow
def test_consolidate_replaces_only_an_earlier_consolidation(trained, tmp_path, capsys):
    out = tmp_path / "w.safetensors"
    save_file({"stale": torch.zeros(1)}, out, metadata={"checkpoint": "an earlier one"})
    assert run(capsys, *COMMANDS["consolidate"].argv(trained, str(out)))[0] == 0
    assert "stale" not in load_file(out) and len(load_file(out)) > 1
    save_file({"mine": torch.zeros(1)}, out)  # safetensors, but not consolidate's: no checkpoint named
    assert "not written by `pretrain consolidate`" in refused(capsys, *COMMANDS["consolidate"].argv(trained, out))
    assert list(load_file(out)) == ["mine"]


def test_a_sweep_restarts_in_its_own_directory_without_overwrite(tmp_path, capsys):
    """(It grows there too: tests/test_transfer_sweep.py.)"""
    sweep = synthetic_sweep(tmp_path / "sweep", mup_like, widths=(128,), lrs="2^-7")
    before = snapshot(sweep)
    code, out, _ = run(capsys, "sweep", TINY, "--widths", "128", "--lrs", "2^-7", "--out", sweep)
    assert code == 0 and "0 points run" in out and snapshot(sweep) == before  # every point finished: none rerun


def test_report_redraws_its_plot_and_refuses_any_other_file(sweep_inputs, tmp_path, capsys):
    plot = tmp_path / "plot.png"
    foreign(plot, "file")  # a PNG (the plot of an earlier report): redrawn without --overwrite
    assert run(capsys, "report", sweep_inputs.sweep, "--plot", plot)[0] == 0
    assert plot.stat().st_size > 10_000
    notes = tmp_path / "notes.txt"
    notes.write_text("the user's")
    assert "not written by `pretrain report`" in refused(capsys, "report", sweep_inputs.sweep, "--plot", notes)
    assert notes.read_text() == "the user's"


def test_gpu_check_writes_over_its_own_results_only(tmp_path, monkeypatch, capsys):
    """The parts stand in for themselves (tests/test_benchmarks.py runs them): what is judged is OUT_DIR."""
    from pretrain.benchmarks import gpu_check

    monkeypatch.setattr(gpu_check, "_run_part", lambda part, seconds, out, dry_run: {
        "status": "ok", "seconds": 0.0, "rows": []})
    out = tmp_path / "out"
    assert run(capsys, "gpu-check", out, "--dry-run")[0] == 0
    (out / "kept.txt").write_text("the user's")
    (out / "gpu_check.md").write_text("stale")
    assert run(capsys, "gpu-check", out, "--dry-run", "--overwrite")[0] == 0
    assert (out / "gpu_check.md").read_text() != "stale" and (out / "kept.txt").read_text() == "the user's"


@pytest.mark.slow
def test_coord_check_writes_over_its_own_results_only(sweep_inputs, tmp_path, capsys):
    out = tmp_path / "cc"
    out.mkdir()
    (out / MARKER).write_text("coord-check\n")
    (out / "coord_check.json").write_text("stale")
    (out / "kept.txt").write_text("the user's")
    argv = COMMANDS["coord-check"].argv(sweep_inputs, str(out))
    small = ["model.n_layers=2", "model.head_dim=16", "model.base_width=32", "data.max_documents=150",
             "data.vocab_size=512", "data.seq_len=64", "train.micro_batch_size=8"]  # as the trained run's data
    assert run(capsys, *argv, *small)[0] == 0
    assert (out / "coord_check.json").read_text() != "stale" and (out / "kept.txt").read_text() == "the user's"


def test_a_run_does_not_write_among_the_users_files(sweep_inputs, tmp_path, capsys):
    """train.out_dir that is not empty and not a run's: refused before anything is written, the user's
    config.yaml kept (a run would have replaced it with its own)."""
    out = tmp_path / "out"
    foreign(out, "directory")
    (out / "notes.txt").write_text("the user's")
    before = snapshot(tmp_path)
    line = refused(capsys, *COMMANDS["train"].argv(sweep_inputs, str(out)))
    assert "train.out_dir" in line and "not written by `pretrain train`" in line, line
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_a_run_resumes_in_its_own_directory(trained, tmp_path, capsys):
    """train.out_dir may hold a run: its own, which it resumes (here: finished already, so nothing to train)."""
    run_dir = shutil.copytree(trained.run, tmp_path / "run")
    code, out, _ = run(capsys, "train", run_dir / "config.yaml", f"train.out_dir={run_dir}")
    assert code == 0 and "run finished at step 2/2" in out
