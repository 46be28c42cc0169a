"""Every Triton kernel at every config its launcher can pick, compiled for an H100 (sm_90) and an A100 (sm_80)
without a GPU: a register spill, or more shared memory than the target gives one block, fails.

In this process the kernels were decorated for the interpreter, so they are compiled in subprocesses that import
triton before the kernels (`launch_inspection.worker`), spread over the cores. `pytest -s` prints the resource
table (so does a failure).
"""

import importlib
import itertools
import os
import subprocess
import sys
import time

import pytest
import triton
import triton.language as tl

from pretrain_kernels._launch_config import DTYPES, LaunchConfig
from pretrain_kernels.flash_attention import _gpu_config
from tests import launch_inspection as inspection
from tests.launch_inspection import Resources, problems, table

TESTS = os.path.dirname(os.path.abspath(__file__))
WORKERS = max(1, min(8, len(os.sched_getaffinity(0))))


def _inspect_in_subprocesses(source: str) -> list[Resources]:
    """Results of `launch_inspection.worker` over the configs that MODULE:FUNCTION `source` returns."""
    code = "import sys, triton; sys.path.insert(0, sys.argv.pop(1)); from launch_inspection import worker; worker()"
    procs = [subprocess.Popen([sys.executable, "-c", code, TESTS, source, str(shard), str(WORKERS)],
                              cwd=os.path.dirname(TESTS), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for shard in range(WORKERS)]
    try:
        outputs = [proc.communicate(timeout=1200) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    for proc, (_, stderr) in zip(procs, outputs):
        assert proc.returncode == 0, stderr[-4000:]
    per_shard = [list(inspection.parse_worker_output(stdout)) for stdout, _ in outputs]
    return [r for row in itertools.zip_longest(*per_shard) for r in row if r is not None]  # in worker order


@pytest.mark.slow
def test_every_launch_config_fits_an_h100_and_an_a100():
    start = time.monotonic()
    results = _inspect_in_subprocesses("launch_inspection:all_launch_configs")
    report = table(results)
    print(f"\n{report}\n{len(results)} compiles on {WORKERS} processes in {time.monotonic() - start:.0f} s")
    kernel_names = {name for module in ("rms_norm", "swiglu", "flash_attention")
                    for name in vars(importlib.import_module(f"pretrain_kernels.{module}")) if name.endswith("_kernel")}
    seen = {(r.kernel, r.arch, r.dtype, r.alignment) for r in results}
    for kernel in kernel_names:  # no kernel left out of its module's launch_configs
        for arch in inspection.SHARED_LIMIT:
            assert {(kernel, arch, d, a) for d in DTYPES for a in inspection.ALIGNMENTS} <= seen, (kernel, arch)
    failing = [line for line in report.splitlines() if "FAIL" in line]
    assert not failing, "configs that spill registers or exceed shared memory:\n" + "\n".join(failing)


def oversized_configs() -> list[LaunchConfig]:
    """Two configs that cannot run well on either target (called in the worker, where the kernels are compiled
    ones): a whole 65536-element row in the RMSNorm backward's registers, and eight pipelining stages of 128-key
    tiles in the attention forward."""
    rms, attention = (importlib.import_module(f"pretrain_kernels.{op}") for op in ("rms_norm", "flash_attention"))
    configs = []
    for arch in inspection.SHARED_LIMIT:
        configs.append(LaunchConfig.make(rms._rms_norm_bwd_kernel, {"HAS_WEIGHT": True, "BLOCK": 65536}, 32, None,
                                         "bf16", arch))
        constexprs = {"HEAD_DIM": 64, "BLOCK_M": 64, "BLOCK_N": 128, "CAUSAL": True, "DOT_DTYPE": tl.bfloat16}
        configs.append(LaunchConfig.make(attention._attn_fwd_kernel, constexprs, 8, 8, "bf16", arch))
    return configs


@pytest.mark.slow
def test_the_check_catches_spills_and_too_much_shared_memory():
    """The check above is not vacuous: the row spills registers, the stages overflow shared memory."""
    results = _inspect_in_subprocesses("test_kernels_launch:oversized_configs")
    report = table(results)
    print(f"\n{report}")
    assert len(results) == 2 * len(inspection.SHARED_LIMIT) * len(inspection.ALIGNMENTS)
    for r in results:
        over = r.shared_bytes > inspection.SHARED_LIMIT[r.arch]
        if r.kernel == "_rms_norm_bwd_kernel":
            assert r.spill_bytes > 0 and not over, r
        elif r.alignment == "aligned":  # unaligned copies are not pipelined through shared memory
            assert over and r.spill_bytes == 0, r
    assert sum("FAIL" in line for line in report.splitlines()) == 2 * len(inspection.SHARED_LIMIT)


# What cuobjdump 13.1 prints for a kernel compiled for sm_80 that spills; ptxas -v on the same PTX said "216
# bytes stack frame, 216 bytes spill stores, 212 bytes spill loads": spills show as STACK, not LOCAL.
CUOBJDUMP_OUTPUT = """
Resource usage:
 Common:
  GLOBAL:11 CONSTANT[4]:8
 Function _attn_fwd_kernel:
  REG:255 STACK:216 SHARED:0 LOCAL:0 CONSTANT[0]:464 TEXTURE:0 SURFACE:0 SAMPLER:0
"""


def test_resource_usage_is_read_per_kernel():
    usage = inspection.parse_resource_usage(CUOBJDUMP_OUTPUT, "_attn_fwd_kernel")
    assert (usage["REG"], usage["STACK"], usage["SHARED"], usage["LOCAL"]) == (255, 216, 0, 0)
    with pytest.raises(RuntimeError, match="_attn_bwd_dq_kernel"):
        inspection.parse_resource_usage(CUOBJDUMP_OUTPUT, "_attn_bwd_dq_kernel")


def test_a_missing_cuobjdump_is_named(monkeypatch):
    monkeypatch.setattr(vars(type(triton.knobs.nvidia))["cuobjdump"], "default_path", "/nonexistent/cuobjdump")
    monkeypatch.delenv("TRITON_CUOBJDUMP_PATH", raising=False)
    with pytest.raises(RuntimeError, match="cuobjdump that ships in the triton wheel"):
        inspection.resource_usage(b"", "_attn_fwd_kernel")


@pytest.mark.parametrize(("spill_bytes", "shared_bytes", "found"), [
    (0, 166912, []), (8, 0, ["spills 8 B"]), (0, 166913, ["shared 166913 B > 166912 B"])])
def test_problems_are_spills_and_shared_memory_over_the_limit(spill_bytes, shared_bytes, found):
    r = Resources(kernel="k", config="BLOCK=1", num_warps=4, num_stages=3, dtype="bf16", alignment="aligned",
                  arch=80, registers=32, spill_bytes=spill_bytes, shared_bytes=shared_bytes)
    assert problems(r) == found
    assert ("FAIL" in table([r])) == bool(found)


@pytest.mark.parametrize(("arch", "table_arch"), [(80, 80), (86, 80), (90, 90), (100, 90)])
def test_attention_tiles_follow_the_compute_capability(arch, table_arch):
    for name, head_dim, element_size in itertools.product(("fwd", "dkdv", "dq"), (16, 128, 256), (2, 4)):
        assert _gpu_config(name, head_dim, arch, element_size) == _gpu_config(name, head_dim, table_arch, element_size)
