"""Every part of DeepSpeed that the adapter (`engine`) uses beyond DeepSpeed's public API, in one place.

DeepSpeed promises nothing about these, so the DeepSpeed versions they were checked against are the range setup.py
declares, enforced when this module is imported, and tests/test_training_deepspeed_compat.py fails when one of
them changes:

- `engine.checkpoint_engine`, the object through which the engine writes and reads its files: `save(state_dict,
  path)` is wrapped to report each file written (`saving`), `load(path, map_location)` replaced to read files as
  data (`loading`);
- `engine._config.load_universal_checkpoint`, set while loading a universal checkpoint (`loading`);
- the modules that call `torch.load` themselves: the optimizers' universal loads (`ENGINE_LOAD_READERS`), the
  ds_to_universal script and the checkpoint classes it uses (`CONVERSION_READERS`), zero_to_fp32
  (`CONSOLIDATION_READERS`);
- ds_to_universal's `main` and the options of its command line (`ds_to_universal_args`);
- `zero_to_fp32.get_fp32_state_dict_from_zero_checkpoint`;
- the classes DeepSpeed pickles into its checkpoints (`checkpoint_classes`);
- `param.ds_tensor`, the partition of a ZeRO-3 parameter a rank holds (`zero3_partition`);
- `deepspeed.ops.__compatible_ops__`, where the CPU backend looks before building its shared-memory all-reduce
  (`skip_cpu_comm_op`);
- torch's `cpp_extension.FileBaton`, the lock file (`lock`) that its just-in-time builds, DeepSpeed's ops among
  them, create in the op's build directory: any waiter waits, silently, as long as it exists, and a build killed
  midway never removes it. `watch_op_builds` puts in its place a baton that names its builder in the file,
  removes a stale one with a warning, and says what a long wait waits for.

Checkpoint files are data, never code. DeepSpeed reads its own files with full pickle (`torch.load(...,
weights_only=False)`); every file it reads for us is read by `load_as_data` instead, which accepts tensors, plain
containers and numbers, and the classes above, and refuses anything else with an error naming the file. Only
DeepSpeed's own view changes, and only for one call: the checkpoint engine we hand the engine, and the global
`torch` of the modules listed, bound to a stand-in whose `load` is `load_as_data`. `torch.load` itself, as any
other module or thread sees it, is never replaced.

DeepSpeed is imported inside the functions: it picks its accelerator when first imported, which
`engine.init_distributed` settles first.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import importlib.metadata
import inspect
import multiprocessing
import os
import pickle
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import torch
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from torch.utils.file_baton import FileBaton

from ..errors import CheckpointError, UserError
from ..locks import Holder, Lock

if TYPE_CHECKING:
    from deepspeed import DeepSpeedEngine

# Modules that call `torch.load` themselves, by the call that reaches them.
ENGINE_LOAD_READERS = (  # `engine.load_checkpoint` of a universal checkpoint, past the checkpoint engine
    "deepspeed.runtime.base_optimizer",  # ZeRO-1/2 and bf16: the global optimizer state
    "deepspeed.runtime.zero.stage3",  # ZeRO-3: the global optimizer state and each parameter's states
    "deepspeed.checkpoint.universal_checkpoint",  # ZeRO-1/2 and bf16: each parameter's states
)
CONVERSION_READERS = (  # ds_to_universal
    "deepspeed.checkpoint.ds_to_universal",
    "deepspeed.checkpoint.deepspeed_checkpoint",
    "deepspeed.checkpoint.zero_checkpoint",
    "deepspeed.checkpoint.reshape_3d_utils",
    "deepspeed.checkpoint.autoep_universal",
)
CONSOLIDATION_READERS = ("deepspeed.utils.zero_to_fp32",)
BUILD_STALE_AFTER_S = 3600  # a build whose directory has not changed for this long has died, wherever it ran
BUILD_QUIET_S = 10.0  # a wait on another process's build is announced past this (the ranks of a node take turns)
BUILD_POLL_S = 1.0  # between looks at a build lock, which may lie on a network file system
_CHECK_SUFFIX = ".check"  # beside a build lock: held by whoever decides whether that lock is stale


def check_version(installed: str) -> None:
    """Refuse a DeepSpeed outside the range our distribution declares: the parts above may differ there."""
    supported = _supported_versions()
    if not supported.contains(installed, prereleases=True):
        bounds = ",".join(sorted(map(str, supported), key=lambda bound: bound.startswith("<")))  # lower first
        raise UserError(f"deepspeed {installed} is installed; pretrain supports deepspeed{bounds} (its private "
                        f"checkpoint and engine hooks, {__name__.replace('.', '/')}.py); install a version in "
                        "that range")


def _supported_versions() -> SpecifierSet:
    """The deepspeed range setup.py declares, as installed with it: the range is written down once."""
    for line in importlib.metadata.requires("pretrain") or ():
        requirement = Requirement(line)
        if canonicalize_name(requirement.name) == "deepspeed":
            return requirement.specifier
    raise RuntimeError("the installed pretrain distribution declares no deepspeed requirement")


check_version(importlib.metadata.version("deepspeed"))


def skip_cpu_comm_op() -> None:
    """Never build DeepSpeed's shared-memory all-reduce for CPUs. Its CPU backend compiles that op just in time at
    the first start on a machine (minutes of C++, which ate the time cap of whatever ran first). Gloo's all-reduce
    serves the CPU runs here."""
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is not None:
        deepspeed.ops.__compatible_ops__[builder.NAME] = False  # what deepspeed.comm asks before building it


def watch_op_builds() -> None:
    """From now on, torch's just-in-time builds in this process (DeepSpeed's ops) take `_BuildBaton` as their lock:
    a build killed midway no longer stalls every later start without a word."""
    from torch.utils import cpp_extension

    cpp_extension.FileBaton = _BuildBaton  # what `_jit_compile` creates, by its global name, for each build


class _BuildBaton(FileBaton):
    """torch's build lock (created whole, removed by `release`), which also names its builder, clears a stale lock
    before building, and says what a wait of more than BUILD_QUIET_S waits for."""

    def try_acquire(self) -> bool:
        _clear_if_stale(Path(self.lock_file_path))
        try:
            self.fd = os.open(self.lock_file_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.write(self.fd, Holder.me().to_json().encode())
        return True

    def wait(self) -> None:
        lock, started, announced = Path(self.lock_file_path), time.monotonic(), False
        while lock.exists():
            if not announced and time.monotonic() - started >= BUILD_QUIET_S:  # ranks starting together wait briefly
                announced = True
                print(f"waiting for a build in {lock.parent}: its lock {lock.name} is held by {Holder.read(lock)} (a "
                      f"lock whose directory sees no change for {BUILD_STALE_AFTER_S // 60} min is removed as stale)",
                      flush=True)
            stale = _clear_if_stale(lock)
            if stale:
                raise UserError(f"{lock.parent}: the build this process waited for ended unfinished ({stale}); its "
                                "lock is removed: start again to build it")
            time.sleep(BUILD_POLL_S)


def _clear_if_stale(lock: Path) -> str | None:
    """Remove the build lock `lock` if its build has died, with a warning; returns why, or None."""
    if not _why_stale(lock):  # the usual case, answered without the check lock
        return None
    with Lock(lock.with_name(lock.name + _CHECK_SUFFIX)) as check:
        check.wait(f"another process checking {lock}")
        reason = _why_stale(lock)  # again: another process may have removed it, and started a build, meanwhile
        if reason:
            lock.unlink()
            print(f"warning: removed the stale build lock {lock} ({reason})", flush=True)
        return reason


def _why_stale(lock: Path) -> str | None:
    """Why the build holding `lock` has died: its builder, on this host, no longer runs, or its build directory has
    not changed for BUILD_STALE_AFTER_S (the only sign of a builder elsewhere, or of one that torch's own baton, which
    names nobody, let in); None while it may be alive, or when there is no lock."""
    try:
        holder = Holder.parse(lock.read_text())
        idle = time.time() - _last_change(lock.parent)
    except FileNotFoundError:
        return None
    if holder.is_dead():
        return f"its builder, pid {holder.pid} on this host, is no longer running"
    if idle > BUILD_STALE_AFTER_S:
        return f"its build directory has not changed for {idle / 60:.0f} min; its builder was {holder}"
    return None


def _last_change(folder: Path) -> float:
    """When a file in `folder` last changed (the compiler's outputs, the lock), the check lock aside. Not the
    folder's own time: creating the check lock changes it."""
    changes = []
    for entry in os.scandir(folder):
        if not entry.name.endswith(_CHECK_SUFFIX):
            with contextlib.suppress(FileNotFoundError):  # a temporary file of the build, gone meanwhile
                changes.append(entry.stat().st_mtime)
    return max(changes, default=0.0)


def checkpoint_classes() -> list[type]:
    """The classes DeepSpeed pickles into its checkpoints, all plain data: the loss scaler (its scale), the ZeRO
    stage, and where each parameter's fragment lies in a flat partition."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, ZeroStageEnum, fragment_address]


def load_as_data(f: str | os.PathLike | IO[bytes], *args, **kwargs) -> Any:
    """`torch.load` of tensors, plain containers, numbers and `checkpoint_classes()` only; anything else, an
    object whose unpickling could run code, is refused with a CheckpointError naming `f`, as is a damaged file."""
    kwargs["weights_only"] = True
    try:
        with torch.serialization.safe_globals(checkpoint_classes()):
            return torch.load(f, *args, **kwargs)
    except pickle.UnpicklingError as err:
        reason = next((line.strip() for line in str(err).splitlines() if "GLOBAL" in line or "global" in line),
                      str(err).splitlines()[0])
        raise CheckpointError(f"{f}: refused: it holds Python objects beyond tensors and plain data, which loading "
                              f"could run as code ({reason})") from None
    except (EOFError, RuntimeError, ValueError) as err:
        raise CheckpointError(f"{f}: unreadable ({type(err).__name__}: {str(err).splitlines()[0]})") from None


class _DataOnlyTorch:
    """`torch` as a module that reads checkpoint files sees it while it reads ours: `load` is `load_as_data`."""

    load = staticmethod(load_as_data)

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)


@contextlib.contextmanager
def _reading_as_data(module_names: tuple[str, ...]) -> Iterator[None]:
    """Inside the block, `torch.load` called from these modules is `load_as_data`, in processes forked inside
    the block too."""
    # A module listed may read nothing at some DeepSpeed versions (0.19.2's reshape_3d_utils): left as it is
    modules = [module for module in map(importlib.import_module, module_names)
               if calls_torch_load(inspect.getsource(module))]
    for module in modules:
        if vars(module).get("torch") is not torch:  # else their loads would silently stay full pickle
            raise RuntimeError(f"{module.__name__} no longer reads files through its global `torch`: update "
                               f"{__name__}")
    stand_in = _DataOnlyTorch()
    for module in modules:
        module.torch = stand_in
    try:
        yield
    finally:
        for module in modules:
            module.torch = torch


def calls_torch_load(source: str) -> bool:
    """Whether Python `source` calls `torch.load`."""
    return any(isinstance(node, ast.Attribute) and node.attr == "load" and isinstance(node.value, ast.Name)
               and node.value.id == "torch" for node in ast.walk(ast.parse(source)))


class _ForwardingCheckpointEngine:
    """A DeepSpeed checkpoint engine, as the one it wraps but for the methods a subclass overrides."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _ReportingWriter(_ForwardingCheckpointEngine):
    def __init__(self, inner, written: Callable[[Path], None]):
        super().__init__(inner)
        self._written = written

    def save(self, state_dict, path: str) -> None:
        self._inner.save(state_dict, path)
        self._written(Path(path))


class _DataOnlyReader(_ForwardingCheckpointEngine):
    """In place of DeepSpeed's TorchCheckpointEngine.load, which unpickles in full."""

    def load(self, path: str, map_location=None) -> Any:
        return load_as_data(path, map_location=map_location)


@contextlib.contextmanager
def saving(engine: DeepSpeedEngine, written: Callable[[Path], None]) -> Iterator[None]:
    """While the DeepSpeed `engine` saves a checkpoint in the block, `written(path)` is called as soon as each of
    its files is complete."""
    writer = engine.checkpoint_engine
    engine.checkpoint_engine = _ReportingWriter(writer, written)
    try:
        yield
    finally:
        engine.checkpoint_engine = writer


@contextlib.contextmanager
def loading(engine: DeepSpeedEngine, universal: bool) -> Iterator[None]:
    """While the DeepSpeed `engine` loads a checkpoint in the block (`universal`: one in the universal format,
    which the engine reads only while its config says so), every file is read as data."""
    reader, config = engine.checkpoint_engine, engine._config
    was_universal = config.load_universal_checkpoint
    engine.checkpoint_engine = _DataOnlyReader(reader)
    config.load_universal_checkpoint = universal
    try:
        with _reading_as_data(ENGINE_LOAD_READERS):
            yield
    finally:
        engine.checkpoint_engine = reader
        config.load_universal_checkpoint = was_universal


def ds_to_universal_args(input_folder: Path, output_folder: Path, workers: int) -> argparse.Namespace:
    """What ds_to_universal's `main` reads: its command line (`parse_arguments`), parsed."""
    return argparse.Namespace(input_folder=str(input_folder), output_folder=str(output_folder),
                              keep_temp_folder=False, num_extract_workers=workers,
                              num_merge_workers=max(1, workers // 4),  # each merge holds whole parameters
                              strict=True, inject_missing_state=True)  # our saves carry no universal info


def ds_to_universal(input_folder: Path, output_folder: Path, workers: int) -> None:
    """DeepSpeed's ds_to_universal script, reading files as data, in up to `workers` processes: more than one only
    where they are forked, and so inherit that."""
    from deepspeed.checkpoint.ds_to_universal import main

    if multiprocessing.get_start_method() != "fork":
        workers = 1
    with _reading_as_data(CONVERSION_READERS):
        main(ds_to_universal_args(input_folder, output_folder, workers))


def fp32_state_dict_from_zero_checkpoint(checkpoint: Path, tag: str) -> dict[str, torch.Tensor]:
    """The full fp32 model state dict of the ZeRO 1-3 checkpoint `checkpoint/tag`, read as data by zero_to_fp32."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    with _reading_as_data(CONSOLIDATION_READERS):
        return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint), tag=tag)


def zero3_partition(param: torch.Tensor) -> torch.Tensor:
    """The part of a ZeRO-3 parameter this rank holds; `param` itself when it is not partitioned."""
    return getattr(param, "ds_tensor", param)
