"""The parts of DeepSpeed beyond its public API that the adapter relies on (pretrain/training/deepspeed_compat.py),
one contract each, against the real, installed DeepSpeed: a DeepSpeed release that renames, moves or changes one
of them fails here, not in a run. Engines are one process on this machine's device, with a model of a few
thousand parameters."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import io
import multiprocessing
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pretrain.config import Config, load_config
from pretrain.errors import CheckpointError, UserError
from pretrain.locks import Holder
from pretrain.model.loss import lm_loss
from pretrain.model.transformer import build_model
from pretrain.training import deepspeed_compat as compat
from pretrain.training import distributed as dist
from pretrain.training.engine import (
    STATE_DIR,
    Engine,
    build_engine,
    consolidated_state_dict,
    convert_to_universal,
    deepspeed_config,
    init_distributed,
)
from pretrain.training.optim import build_optimizer

READERS = {*compat.ENGINE_LOAD_READERS, *compat.CONVERSION_READERS, *compat.CONSOLIDATION_READERS}


class Note:
    """A harmless class outside DeepSpeed's: unpickling it imports this module, as a payload would its own."""

    def __init__(self, text: str):
        self.text = text


def pickled(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def device():
    """A process group of one, as `pretrain train` joins it; the environment is restored afterwards."""
    device = dist.pick_device("auto")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DS_ACCELERATOR", device.type)  # before DeepSpeed is first imported
        for name, value in dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                                MASTER_PORT=str(dist.free_port())).items():
            env.setenv(name, value)
        init_distributed(device)
        yield device
        torch.distributed.destroy_process_group()


def tiny_overrides(stage: int) -> list[str]:
    return ["model.d_model=32", "model.n_layers=2", "model.head_dim=16", "data.vocab_size=512", "data.seq_len=16",
            "train.micro_batch_size=2", "train.global_batch_size=2", f"deepspeed.zero_stage={stage}"]


def tiny(stage: int) -> Config:
    return load_config(None, tiny_overrides(stage))


def deepspeed_engine(stage: int, device: torch.device):
    """DeepSpeed's own engine, initialized with the config the adapter gives it."""
    import deepspeed

    cfg = tiny(stage)
    model = build_model(cfg.model, cfg.vocab_size, seed=0, device=device)
    engine, *_ = deepspeed.initialize(model=model, optimizer=build_optimizer(model, cfg.model, cfg.optim),
                                      config=deepspeed_config(cfg, 1, device))
    return engine


def trained_engine(stage: int, device: torch.device) -> Engine:
    """The adapter's engine after one step, so that its checkpoints hold Adam's moments."""
    cfg = tiny(stage)
    model = build_model(cfg.model, cfg.vocab_size, seed=0, device=device)
    engine = build_engine(cfg, model, build_optimizer(model, cfg.model, cfg.optim), 1, device)
    engine.backward(lm_loss(engine, torch.randint(0, cfg.vocab_size, (2, cfg.data.seq_len + 1), device=device)))
    engine.step()
    return engine


@pytest.fixture(scope="module")
def ds_engine(device):
    engine = deepspeed_engine(1, device)
    yield engine
    engine.destroy()


@pytest.fixture
def loads(monkeypatch, tmp_path):
    """Every `torch.load` made in the test, forked processes' too, as seen from torch: (pid, calling module,
    weights_only)."""
    log, full_load = tmp_path / "loads.log", torch.load

    def load(*args, **kwargs):
        with log.open("a") as out:
            out.write(f"{os.getpid()} {sys._getframe(1).f_globals['__name__']} {kwargs.get('weights_only')}\n")
        return full_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    return lambda: [tuple(line.split()) for line in log.read_text().splitlines()] if log.exists() else []


# The version range.

def test_a_deepspeed_outside_the_declared_range_is_refused_in_one_line():
    with pytest.raises(UserError) as refused:
        compat.check_version("0.20.1")
    assert str(refused.value) == (
        "deepspeed 0.20.1 is installed; pretrain supports deepspeed>=0.19.2,<0.20 (its private checkpoint and engine "
        "hooks, pretrain/training/deepspeed_compat.py); install a version in that range")
    with pytest.raises(UserError, match=r"^deepspeed 0\.19\.1 is installed; pretrain supports deepspeed>="):
        compat.check_version("0.19.1")


def test_the_installed_deepspeed_is_in_the_declared_range():
    compat.check_version(importlib.metadata.version("deepspeed"))


# What DeepSpeed pickles into its checkpoints.

def test_the_classes_in_deepspeeds_checkpoints_import_from_their_paths_and_load_as_data(device):
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    assert [f"{c.__module__}.{c.__qualname__}" for c in compat.checkpoint_classes()] == [
        "deepspeed.runtime.fp16.loss_scaler.LossScaler", "deepspeed.runtime.zero.config.ZeroStageEnum",
        "deepspeed.utils.tensor_fragment.fragment_address"]
    state = {"scaler": LossScaler(scale=4.0), "stage": ZeroStageEnum.weights,
             "slice": fragment_address(numel=6, start=2)}
    loaded = compat.load_as_data(io.BytesIO(pickled(state)))
    assert loaded["scaler"].cur_scale == 4.0
    assert loaded["stage"] is ZeroStageEnum.weights and loaded["slice"] == fragment_address(numel=6, start=2)


def test_anything_else_is_refused_and_a_damaged_file_is_unreadable(tmp_path):
    payload = tmp_path / "payload.pt"
    payload.write_bytes(pickled({"w": torch.ones(2), "note": Note("runs as code")}))
    refused = (rf"^{re.escape(str(payload))}: refused: it holds Python objects beyond tensors and plain data, "
               r"which loading could run as code \(.*Note")
    with pytest.raises(CheckpointError, match=refused):
        compat.load_as_data(payload)
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(payload.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(damaged))}: unreadable \("):
        compat.load_as_data(damaged)


# The engine's checkpoint engine and config.

def test_the_engine_writes_and_reads_through_a_torch_checkpoint_engine_with_the_calls_we_wrap(ds_engine):
    from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine

    writer = ds_engine.checkpoint_engine
    assert isinstance(writer, TorchCheckpointEngine)  # whose `load` (full pickle) ours replaces outright
    inspect.signature(writer.save).bind({}, "file.pt")
    inspect.signature(writer.save).bind(state_dict={}, path="file.pt")  # DeepSpeed calls it both ways
    inspect.signature(writer.load).bind("file.pt", map_location="cpu")


def test_saving_reports_every_file_the_engine_writes(device, tmp_path):
    engine = trained_engine(1, device)
    digests = engine.save(tmp_path)
    written = {p.relative_to(tmp_path).as_posix() for p in (tmp_path / STATE_DIR).rglob("*") if p.is_file()}
    assert written and set(digests) == written
    engine.destroy()


def test_the_engine_loads_a_universal_checkpoint_while_its_config_says_so(ds_engine):
    assert ds_engine._config.load_universal_checkpoint is False
    with compat.loading(ds_engine, universal=True):
        assert ds_engine.load_universal_checkpoint() is True
    assert ds_engine.load_universal_checkpoint() is False


# The scripts.

def test_ds_to_universal_parses_exactly_the_options_we_pass(device, monkeypatch, capsys):
    from deepspeed.checkpoint.ds_to_universal import main, parse_arguments

    ours = compat.ds_to_universal_args(Path("in"), Path("out"), workers=1)
    monkeypatch.setattr(sys, "argv", ["ds_to_universal", "--input_folder", "in", "--output_folder", "out"])
    assert sorted(vars(parse_arguments())) == sorted(vars(ours))  # a renamed, new or newly required option fails
    inspect.signature(main).bind(ours)


def test_zero_to_fp32_takes_the_arguments_we_pass(device):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    inspect.signature(get_fp32_state_dict_from_zero_checkpoint).bind("checkpoint", tag=STATE_DIR)


# Where DeepSpeed reads files.

def test_the_modules_listed_read_files_through_their_global_torch_and_no_other_checkpoint_module_does(device):
    """Those that read at this DeepSpeed version (a listed module may read nothing at another) do so through their
    global `torch`, which the stand-in replaces; no unlisted checkpoint module reads."""
    modules = [importlib.import_module(name) for name in READERS]
    reading = [module for module in modules if compat.calls_torch_load(inspect.getsource(module))]
    assert reading and all(vars(module).get("torch") is torch for module in reading)
    import deepspeed.checkpoint

    package = Path(deepspeed.checkpoint.__file__).parent
    readers = {f"deepspeed.checkpoint.{p.stem}" for p in package.glob("*.py") if compat.calls_torch_load(p.read_text())}
    assert readers <= READERS, sorted(readers - READERS)


def test_the_load_check_finds_a_torch_load_and_nothing_else(device):
    import json as a_module_without_loads

    from deepspeed.checkpoint import zero_checkpoint

    assert compat.calls_torch_load(inspect.getsource(zero_checkpoint))
    assert not compat.calls_torch_load(inspect.getsource(a_module_without_loads))


@pytest.mark.parametrize("stage", [1, 3])  # ZeRO-1 shares its loads with ZeRO-2 and bf16; ZeRO-3 has its own
def test_every_file_deepspeed_reads_for_us_is_read_as_data(device, tmp_path, loads, stage):
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    trained = trained_engine(stage, device)
    trained.save(checkpoint)
    convert_to_universal(checkpoint)
    consolidated_state_dict(checkpoint, stage)
    fresh = trained_engine(stage, device)
    fresh.load(checkpoint, universal=False)
    fresh.load(checkpoint, universal=True)
    assert {(module, weights_only) for _, module, weights_only in loads()} == {(compat.__name__, "True")}
    for engine in (trained, fresh):
        engine.destroy()


@pytest.mark.skipif(multiprocessing.get_start_method() != "fork", reason="workers are used only where forked")
def test_forked_conversion_workers_read_as_data_too(device, tmp_path, loads):
    engine = trained_engine(1, device)
    engine.save(tmp_path)
    engine.destroy()
    compat.ds_to_universal(tmp_path / STATE_DIR, tmp_path / "universal", workers=2)
    seen = loads()
    assert {pid for pid, _, _ in seen} - {str(os.getpid())}, "no worker process read a file"
    assert {(module, weights_only) for _, module, weights_only in seen} == {(compat.__name__, "True")}


def test_torch_load_elsewhere_is_untouched_while_deepspeed_reads_as_data(ds_engine):
    from deepspeed.checkpoint import universal_checkpoint

    full_load, note = torch.load, pickled(Note("plain data to this caller"))
    with compat.loading(ds_engine, universal=True):
        assert torch.load is full_load
        assert torch.load(io.BytesIO(note), weights_only=False).text == "plain data to this caller"
        with pytest.raises(CheckpointError, match="refused"):
            universal_checkpoint.torch.load(io.BytesIO(note), weights_only=False)
    assert all(vars(importlib.import_module(name)).get("torch", torch) is torch for name in READERS)


# ZeRO-3's parameters.

def test_a_zero3_parameter_keeps_its_partition_in_ds_tensor(device):
    engine = deepspeed_engine(3, device)
    params = list(engine.module.parameters())
    partitions = [compat.zero3_partition(p) for p in params]
    assert all(part is not p and p.numel() == 0 for p, part in zip(params, partitions, strict=True))
    size = sum(p.numel() for p in build_model(tiny(3).model, 512, seed=0).parameters())
    assert sum(part.numel() for part in partitions) == size  # one rank holds it all
    engine.destroy()
    engine = deepspeed_engine(1, device)
    assert all(compat.zero3_partition(p) is p for p in engine.module.parameters())
    engine.destroy()


# Each μP group's settings reach the step.

@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_each_groups_adam_eps_is_the_eps_of_the_deepspeed_step(device, tmp_path, stage):
    """CompleteP's hidden ε (ε/(m·m_L), here ε/2) survives deepspeed.initialize at every ZeRO stage and is the ε
    its step uses: Adam's first step moves a weight by lr·g/(|g| + ε), so with ε of the gradients' size the moved
    weights tell each group's ε apart (fp32, no clipping: the step is exactly that; a nonzero query, so that every
    weight has a gradient)."""
    cfg = load_config(None, [*tiny_overrides(stage), "model.base_width=32", "model.depth_parametrization=completep",
                             "model.base_depth=1", "model.zero_query=false", "optim.eps=1e-3", "optim.grad_clip=0",
                             "deepspeed.precision=fp32"])
    model = build_model(cfg.model, cfg.vocab_size, seed=0, device=device)
    batch = torch.randint(0, cfg.vocab_size, (2, cfg.data.seq_len + 1), generator=torch.Generator().manual_seed(0))
    reference = build_model(cfg.model, cfg.vocab_size, seed=0, device=device)
    lm_loss(reference, batch.to(device)).backward()
    engine = build_engine(cfg, model, build_optimizer(model, cfg.model, cfg.optim), 1, device)
    groups = {g["name"]: g for g in engine.deepspeed_optimizer.param_groups}
    assert {name: g["eps"] for name, g in groups.items()} == {
        "embedding": 1e-3, "query": 5e-4, "key": 5e-4, "value": 5e-4, "attn_out": 5e-4, "mlp_in": 5e-4,
        "mlp_out": 5e-4, "readout": 1e-3}
    engine.backward(lm_loss(engine, batch.to(device)))
    engine.step()
    engine.save(tmp_path, checksums=False)
    engine.destroy()
    stepped = consolidated_state_dict(tmp_path, stage)
    hidden = reference.block_params()
    for name, p in reference.named_parameters():
        eps = 5e-4 if name in hidden else 1e-3
        predicted = p.detach() - cfg.optim.lr * p.grad / (p.grad.abs() + eps)
        torch.testing.assert_close(stepped[name].to(device), predicted, rtol=0, atol=1e-6, msg=name)
        if name in hidden:  # the base ε would have moved them visibly less
            base = p.detach() - cfg.optim.lr * p.grad / (p.grad.abs() + 1e-3)
            assert (stepped[name].to(device) - base).abs().max() > 1e-4, name


def test_ops_built_just_in_time_go_to_a_folder_per_deepspeed_and_torch_version():
    """A build left in torch's extension cache by another DeepSpeed version is never loaded: the folder names
    both versions (a process that joins the process group uses it unless TORCH_EXTENSIONS_DIR is set)."""
    import importlib.metadata

    import torch

    from pretrain.training.engine import op_build_dir

    assert op_build_dir().name == f"deepspeed-{importlib.metadata.version('deepspeed')}-torch-{torch.__version__}"


def test_the_cpu_backend_starts_without_building_its_shared_memory_op(tmp_path):
    """On CPUs DeepSpeed would compile its shared-memory all-reduce at the first start (minutes); it is marked
    unavailable where deepspeed.comm looks, so the group starts on gloo alone and nothing is built."""
    from pretrain.training.engine import op_build_dir

    code = ("import os, torch; from pretrain.training.engine import init_distributed; "
            "init_distributed(torch.device('cpu')); import deepspeed.comm.comm as c; "
            "print(os.environ['TORCH_EXTENSIONS_DIR']); print(c.cdb.shm_comm_op)")
    started = ("TORCH_EXTENSIONS_DIR", "RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    env = {k: v for k, v in os.environ.items() if k not in started}  # a new process, not this one's group
    env["HOME"] = str(tmp_path)  # torch's extension cache lives under it: a machine that never built anything
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    folder, op = run.stdout.strip().splitlines()[-2:]
    assert op == "None" and folder.startswith(str(tmp_path)) and folder.endswith(op_build_dir().name)
    assert not any(tmp_path.rglob("*shm*")), "an op was built"


# torch's just-in-time builds (DeepSpeed's ops), each in a process of its own: a build lock that torch no longer
# takes through `cpp_extension.FileBaton` would be waited on forever, which here is a timeout.

BUILD = """
import sys
from torch.utils import cpp_extension
from pretrain.training import deepspeed_compat
deepspeed_compat.BUILD_QUIET_S = float(sys.argv[3])
deepspeed_compat.watch_op_builds()
print(cpp_extension.load("probe", [sys.argv[2]], build_directory=sys.argv[1], is_python_module=False), flush=True)
"""


def build_probe(tmp_path, quiet_s: float = 10.0) -> subprocess.Popen:
    """A process building (or, once built, loading) an op through torch's loader; its build directory is
    tmp_path/probe, where torch takes its lock, tmp_path/probe/lock."""
    source = tmp_path / "probe.cpp"
    source.write_text('extern "C" int probe() { return 42; }\n')  # no torch headers: it compiles in a second
    (tmp_path / "probe").mkdir(exist_ok=True)
    return subprocess.Popen([sys.executable, "-c", BUILD, str(tmp_path / "probe"), str(source), str(quiet_s)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.slow
@pytest.mark.parametrize("left_by", ["a dead builder", "torch, an hour ago"])
def test_a_stale_build_lock_is_reported_and_removed_and_the_op_builds(tmp_path, left_by):
    lock = tmp_path / "probe" / "lock"
    lock.parent.mkdir()
    if left_by == "a dead builder":
        pid = dead_pid()
        lock.write_text(Holder(pid, socket.gethostname(), time.time()).to_json())
        reason = f"its builder, pid {pid} on this host, is no longer running"
    else:
        lock.write_text("")  # torch's own baton writes nothing
        os.utime(lock, (time.time() - 7200, time.time() - 7200))
        reason = "its build directory has not changed for 120 min; its builder was an unnamed process"
    stdout, stderr = build_probe(tmp_path).communicate(timeout=120)
    assert f"warning: removed the stale build lock {lock} ({reason})\n" in stdout, stdout + stderr[-2000:]
    assert stdout.endswith(f"{lock.parent / 'probe.so'}\n") and (lock.parent / "probe.so").is_file()
    assert not lock.exists()


@pytest.mark.slow
@pytest.mark.parametrize("builder", ["finishes", "dies"])
def test_a_wait_on_a_live_build_says_what_it_waits_for(tmp_path, builder):
    assert build_probe(tmp_path).wait(timeout=300) == 0  # the op, built: a waiter that sees the build end loads it
    lock = tmp_path / "probe" / "lock"
    live = subprocess.Popen(["sleep", "600"])
    lock.write_text(Holder(live.pid, socket.gethostname(), time.time()).to_json())
    waiter = build_probe(tmp_path, quiet_s=0)
    said = waiter.stdout.readline()
    assert said.startswith(f"waiting for a build in {lock.parent}: its lock lock is held by pid {live.pid} on host "
                           f"{socket.gethostname()} since ") and said.endswith(
        " UTC (a lock whose directory sees no change for 60 min is removed as stale)\n"), said
    time.sleep(2)
    assert waiter.poll() is None and lock.exists()
    if builder == "finishes":
        lock.unlink()  # as torch's baton does at the end of a build
        live.kill()
        live.wait()
        stdout, stderr = waiter.communicate(timeout=300)
        assert waiter.returncode == 0 and stdout == f"{lock.parent / 'probe.so'}\n", stderr[-2000:]
    else:
        live.kill()
        live.wait()
        stdout, stderr = waiter.communicate(timeout=300)
        reason = f"its builder, pid {live.pid} on this host, is no longer running"
        assert waiter.returncode != 0 and stdout == f"warning: removed the stale build lock {lock} ({reason})\n"
        assert stderr.splitlines()[-1] == (f"pretrain.errors.UserError: {lock.parent}: the build this process waited "
                                           f"for ended unfinished ({reason}); its lock is removed: start again to "
                                           "build it")
        assert not lock.exists()
