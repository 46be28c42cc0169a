"""Atomic, self-describing, verified training checkpoints, their retention, and where to resume from.

    OUT/checkpoints/step_00000100/
        ds/              model + optimizer states (the engine's files, one set per rank, any ZeRO stage)
        universal/       the same in DeepSpeed's universal format, written on the first resume at another
                         world size (readable by any world size), with its own checksums.json
        rng/rank0.pt     torch/python RNG state of each rank
        trainer.json     step, world size, global batch (with the step, the data position)
        config.yaml      the resolved run config
        tokenizer.json
        checksums.json   digest (SHA-256 over 64 MiB blocks) and size of every file above, recorded as written

Everything is written under a staging name (`.tmp-step_...`) and renamed at the end, so a directory named
`step_*` is always complete; a crash mid-save leaves only the staging directory, removed on the next start.
Before a checkpoint is used (resume, consolidate, export, load_model) every file is checked against
checksums.json: a truncated, replaced or bit-flipped file, a missing one, or a file the save did not write is
reported by name. `train.resume=auto` skips a damaged newest checkpoint with a warning and resumes from the
newest intact one; an explicitly named damaged checkpoint is an error. Files are loaded as data only (see
`deepspeed_compat.load_as_data`).

A resume compares the run's config with the checkpoint's (`check_resume`) before anything is written. A save that
finds the disk full is one error line naming the path and the free space; its staging directory is removed and
the previous checkpoints stay as they were.
"""

from __future__ import annotations

import errno
import json
import random
import shutil
from pathlib import Path

import torch

from ..config import Config, load_config
from ..errors import CheckpointError, ConfigError, UserError
from ..fileio import STAGING_PREFIX, checksum, contained, publish, read_json_object, remove, staging_path, write_json
from . import distributed as dist
from .deepspeed_compat import load_as_data
from .engine import (
    CHECKSUMS,
    STATE_DIR,
    UNIVERSAL_DIR,
    Engine,
    consolidated_state_dict,
    convert_to_universal,
    has_zero_partitions,
)

_PREFIX = "step_"
RNG_DIR = "rng"
# trainer.json: key -> (type, smallest allowed value)
TRAINER_STATE = {"step": (int, 0), "world_size": (int, 1), "data_step": (int, 0), "global_batch": (int, 1),
                 "lr_multiplier": (float, 0.0)}


def step_dir_name(step: int) -> str:
    return f"{_PREFIX}{step:08d}"


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX) and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX):]))


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def check_checkpoint(path: Path) -> Path:
    """Validate that `path` is a complete checkpoint directory; raise CheckpointError naming what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint directory")
    if path.name.startswith(STAGING_PREFIX):
        raise CheckpointError(f"{path}: an incomplete checkpoint (its save never finished)")
    for name in ("trainer.json", "config.yaml", STATE_DIR, CHECKSUMS):
        if not (path / name).exists():
            raise CheckpointError(f"{path}: not a complete checkpoint ({name} is missing)")
    return path


def verify_files(directory: Path, owned: tuple[str, ...] = ()) -> None:
    """Every file that directory/checksums.json lists is there with its size and SHA-256, and the folders in
    `owned` (all of `directory` if empty) hold no other file; raises CheckpointError naming the first bad file."""
    manifest = directory / CHECKSUMS
    try:
        listed = json.loads(manifest.read_text())
        expected = {name: (int(v["bytes"]), str(v["digest"])) for name, v in listed.items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        raise CheckpointError(f"{manifest}: unreadable checksums ({type(err).__name__}: {err})") from None
    for name in expected:  # before anything is read: an entry must not lead out of the checkpoint
        try:
            contained(directory, name)
        except ValueError as err:
            raise CheckpointError(f"{manifest}: lists a file outside the checkpoint ({err})") from None
    for name, (size, _) in expected.items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing (the checkpoint's checksums list it)")
        if path.stat().st_size != size:
            raise CheckpointError(f"{path}: {path.stat().st_size:,} bytes, but {size:,} bytes when it was saved "
                                  "(truncated or replaced)")
    digests = {name: checksum(directory / name)["digest"] for name in expected}  # each in parallel over its blocks
    for name, (_, digest) in expected.items():
        if digests[name] != digest:
            raise CheckpointError(f"{directory / name}: its contents changed since it was saved (checksum "
                                  "mismatch: corrupted on disk, or edited)")
    folders = [directory / f for f in owned] if owned else [directory]
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            if path.relative_to(directory).as_posix() not in expected and path.name != CHECKSUMS:
                raise CheckpointError(f"{path}: not written by the checkpoint's save (not in its checksums)")


def verify_checkpoint(path: Path) -> Path:
    """`path` if it is a complete, intact checkpoint with a valid trainer.json; else CheckpointError."""
    path = check_checkpoint(path)
    verify_files(path, owned=(STATE_DIR, RNG_DIR))
    read_trainer_state(path)
    return path


def resolve_checkpoint(path: Path) -> Path:
    """`path` itself if it is a checkpoint, else the newest complete one in a run dir, its `checkpoints/`,
    or `checkpoints/latest`, verified; raises CheckpointError naming what is wrong."""
    path = Path(path)
    if not (path / "trainer.json").exists():
        base = path.parent if path.name == "latest" else path
        for root in (base, base / "checkpoints"):
            found = latest_checkpoint(root)
            if found is not None:
                return verify_checkpoint(found)
    return verify_checkpoint(path)


def load_consolidated_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The full fp32 model state dict of a checkpoint of any ZeRO stage and world size, on the CPU; the caller
    verifies it first (`resolve_checkpoint`)."""
    path = Path(path)
    stage = load_config(path / "config.yaml").deepspeed.zero_stage
    try:
        state = consolidated_state_dict(path, stage)
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise CheckpointError(f"{path / STATE_DIR}: cannot read the ZeRO-{stage} weights ({err})") from None
    # ZeRO-1/2 weights come back as views into their group's flat buffer: each is copied into storage of its own
    # (safetensors refuses to save a view of a larger buffer), the buffer freed once its last view is copied out.
    return {name: _owned(state.pop(name).float()) for name in list(state)}


def _owned(tensor: torch.Tensor) -> torch.Tensor:
    return tensor if tensor.untyped_storage().nbytes() == tensor.nbytes else tensor.clone()


def read_trainer_state(path: Path) -> dict:
    """trainer.json, with every key the trainer needs present, of its type and range."""
    file = path / "trainer.json"
    state = read_json_object(file, CheckpointError)
    for key, (kind, low) in TRAINER_STATE.items():
        value = state.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) or value < low:
            raise CheckpointError(f"{file}: {key} must be {'a number' if kind is float else 'an integer'} >= {low}, "
                                  f"got {value!r}")
    if not isinstance(state.get("initial_loss"), (int, float, type(None))):
        raise CheckpointError(f"{file}: initial_loss must be a number or null, got {state['initial_loss']!r}")
    return state


def clean_partial(root: Path) -> None:
    """Remove what crashed saves left under `root` (every rank calls it)."""
    if dist.is_main() and root.is_dir():
        for partial in root.glob(f"{STAGING_PREFIX}*"):
            remove(partial)
    dist.barrier()


def to_resume(root: Path, resume: str) -> Path | None:
    """The verified checkpoint `train.resume` names (every rank calls it; rank 0 reads the files): "auto" = the
    newest intact one under `root` (None if there is none yet), "never" = None, else that path."""
    if resume == "never":
        return None
    if resume != "auto":
        return dist.on_main(lambda: verify_checkpoint(Path(resume)))
    return dist.on_main(lambda: _newest_intact(root))


def _newest_intact(root: Path) -> Path | None:
    found = list_checkpoints(root)
    for path in reversed(found):
        try:
            return verify_checkpoint(path)
        except CheckpointError as err:
            print(f"warning: skipping a damaged checkpoint: {err}", flush=True)
    if found:
        raise CheckpointError(f"{root}: none of the {len(found)} checkpoints is intact (see the warnings); "
                              f"to start over, move {root.parent} away or choose another train.out_dir")
    return None


# How a resume treats a setting that differs from the checkpoint's config. The longest entry that is the key or
# its section decides; what no entry covers (run length, cadences, W&B, out_dir, device) is only noted.
_RESUME_RULES = {
    "model": "fixed",  # the weights' shapes and the μP recipe they were trained under
    "data.vocab_size": "fixed",  # the embedding and readout rows
    "deepspeed.zero_stage": "fixed",  # the optimizer files are laid out by stage (but see _resume_rule)
    "deepspeed.precision": "fixed",  # and by precision (bf16 keeps the fp32 master weights apart)
    "optim.name": "fixed",  # and by optimizer (AdamW's two moments, Lion's one)
    "model.use_kernels": "noted", "model.loss_chunk": "noted",  # how the same math is computed
    "optim": "guarded", "data": "guarded", "train.seed": "guarded",  # the run would go on as another experiment
    "data.cache_dir": "noted", "data.num_workers": "noted",  # where and how fast, not what
    "train.resume": "ignored", "train.allow_config_change": "ignored",  # how this launch starts
}


_BATCH = "the global batch (sequences per step)"  # whatever sets it: the data order and the updates follow it


def _resume_rule(key: str, old: object, new: object) -> str:
    if key == "deepspeed.zero_stage" and {old, new} <= {1, 2}:
        return "noted"  # one optimizer and the same files (ZeRO-2 also splits the gradients, which are not saved)
    covering = [entry for entry in _RESUME_RULES if key == entry or key.startswith(f"{entry}.")]
    return _RESUME_RULES[max(covering, key=len)] if covering else "noted"


def check_resume(cfg: Config, checkpoint: Path) -> None:
    """Compare `cfg` with the config `checkpoint` was saved under, before anything of the run is written (every
    rank calls it; rank 0 reads and prints). A change of the model's shape or μP, or of the ZeRO stage (but
    between 1 and 2), precision or optimizer (optim.name) its states were written in, is a ConfigError naming it, and
    so is a Lion run's ZeRO checkpoint at another world size. A change of the optimizer's settings, schedule, data,
    seed or global batch (whatever sets it: the data order and the updates follow it) is one too, unless
    train.allow_config_change is set. Every change is printed."""
    dist.on_main(lambda: _check_resume(cfg, checkpoint))


def _check_resume(cfg: Config, checkpoint: Path) -> None:
    saved, current = load_config(checkpoint / "config.yaml").to_dict(), cfg.to_dict()
    differing = [(f"{section}.{key}", old, current[section][key]) for section, settings in saved.items()
                 for key, old in settings.items() if old != current[section][key]]
    changes = [(name, old, new, _resume_rule(name, old, new)) for name, old, new in differing]
    trainer = read_trainer_state(checkpoint)
    before, now = trainer["global_batch"], cfg.train.global_batch(dist.world_size())
    if before != now:
        changes.append((_BATCH, before, now, "guarded"))
    rules = {rule for *_, rule in changes}

    def listed(which: str) -> str:
        return ", ".join(f"{name} ({_shown(old)} there, {_shown(new)} here)" for name, old, new, rule in changes
                         if rule == which)

    if "fixed" in rules:
        raise ConfigError(f"{checkpoint}: cannot resume with another model or state layout: {listed('fixed')}; "
                          "keep the checkpoint's settings, or start a new run in another train.out_dir")
    saved_world = trainer["world_size"]
    if cfg.optim.name == "lion" and saved_world != dist.world_size() and has_zero_partitions(checkpoint):
        # Another world size reads ZeRO partitions through DeepSpeed's universal format, which holds Adam's
        # two moments and nothing else.
        raise ConfigError(f"{checkpoint}: optim.name=lion: a ZeRO checkpoint of a Lion run resumes only at the world "
                          f"size it was saved at ({saved_world} processes, {dist.world_size()} here); resume with "
                          f"{saved_world} processes")
    if "guarded" in rules and not cfg.train.allow_config_change:
        fixes = " (train.global_batch_size fixes it at any number of processes)" if before != now else ""
        raise ConfigError(f"{checkpoint}: resuming would change {listed('guarded')}, continuing the run as another "
                          "experiment; set train.allow_config_change=true to do so, or keep the checkpoint's "
                          f"settings{fixes}")
    shown = [change for change in changes if change[3] != "ignored"]
    if shown:
        print(f"resuming with settings that differ from {checkpoint / 'config.yaml'}:", flush=True)
    for name, old, new, rule in shown:
        allowed = " (train.allow_config_change)" if rule == "guarded" else ""
        print(f"  {name}: {_shown(old)} -> {_shown(new)}{allowed}", flush=True)


def _shown(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)


class DiskFullError(UserError, OSError):
    """A checkpoint could not be written for lack of space (a full disk or a quota); the previous ones are kept."""


def _out_of_space(err: BaseException) -> bool:
    """Whether a failed write ran out of space. Torch's writer keeps no errno: a write cut short is its
    RuntimeError "unexpected pos" (or "file write failed"), which only a full disk, a quota or a failing device
    give."""
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(err, RuntimeError) and any(s in str(err) for s in ("unexpected pos", "file write failed"))


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _gib(n: int) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**30 else f"{n / 2**20:.3g} MiB"


class Checkpointer:
    def __init__(self, root: Path, keep: int, files: dict[str, Path]):
        """`files` are copied into every checkpoint under the given names (config, tokenizer)."""
        self.root, self.keep, self.files = Path(root), keep, files

    def save(self, engine: Engine, step: int, state: dict) -> Path:
        """Write a checkpoint of `step` (every rank calls it); `state` goes into trainer.json. A full disk is
        DiskFullError, with the staging directory removed and the previous checkpoints untouched."""
        final = self.root / step_dir_name(step)
        staged = staging_path(final)
        try:
            self._write(engine, step, state, staged)
        except BaseException as err:
            shutil.rmtree(staged, ignore_errors=True)  # every rank that failed: another may have failed first
            if _out_of_space(err):
                raise DiskFullError(self._full_message(final, err)) from None
            raise
        if dist.is_main():
            publish(staged, final)  # replaces the same step saved again (a stop request right after a save)
            for old in list_checkpoints(self.root)[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        dist.barrier()
        return final

    def _write(self, engine: Engine, step: int, state: dict, staged: Path) -> None:
        if dist.is_main():
            remove(staged)
            (staged / RNG_DIR).mkdir(parents=True)
        dist.barrier()
        written = engine.save(staged)
        rng_file = staged / RNG_DIR / f"rank{dist.rank()}.pt"
        torch.save(_rng_state(), rng_file)
        checksums = {name: digest.result() for name, digest in written.items()}
        checksums[rng_file.relative_to(staged).as_posix()] = checksum(rng_file)
        every_rank = dist.gather(checksums)
        if dist.is_main():
            for name, source in self.files.items():
                shutil.copy(source, staged / name)
            write_json(staged / "trainer.json", {"step": step, **state})
            for name in (*self.files, "trainer.json"):
                checksums[name] = checksum(staged / name)
            merged = {name: digest for ranks in [*every_rank, checksums] for name, digest in ranks.items()}
            write_json(staged / CHECKSUMS, dict(sorted(merged.items())))

    def _full_message(self, final: Path, err: BaseException) -> str:
        usage = shutil.disk_usage(self.root)
        why = "disk quota exceeded" if getattr(err, "errno", None) == errno.EDQUOT else "no space left on the device"
        last = latest_checkpoint(self.root)
        kept = (f"the previous checkpoint {last} ({_gib(_size(last))}) is intact" if last else
                "no checkpoint was saved before")
        return (f"{final}: cannot save the checkpoint, {why} ({_gib(usage.free)} free of {_gib(usage.total)} "
                f"there after removing the partial save); {kept}. Free space (train.keep_checkpoints keeps fewer), "
                "then resume")

    def load(self, engine: Engine, path: Path) -> dict:
        """Restore model, optimizer and this rank's RNG from a verified checkpoint; returns the trainer state.
        At another world size the checkpoint is read through DeepSpeed's universal format (converted once,
        and its files verified too)."""
        state = read_trainer_state(path)
        universal = state["world_size"] != dist.world_size() and has_zero_partitions(path)
        if universal:
            converted = convert_to_universal(path)  # hashed as it was written: only an earlier one is verified
            dist.on_main(lambda: converted or verify_files(path / UNIVERSAL_DIR))
        engine.load(path, universal)
        rng_file = path / RNG_DIR / f"rank{dist.rank()}.pt"
        if rng_file.exists():  # absent when resuming at a larger world size: keep the fresh seed
            _set_rng_state(load_as_data(rng_file))
        return state


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
