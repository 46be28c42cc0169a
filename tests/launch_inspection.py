"""Whether the Triton kernels can launch on an H100 (sm_90) and an A100 (sm_80), checked without a GPU: the
compile inspection behind tests/test_kernels_launch.py.

Each op module lists the compiles its launcher can ask for in `launch_configs(arch)`. `compile_and_inspect`
compiles one for its target and reads registers, spills and shared memory from the binary with the `cuobjdump`
that ships with Triton; `problems` says what would stop it from launching, or make it spill.

Compiling needs the kernels decorated for the GPU compiler, i.e. `triton` imported before any op of
`pretrain_kernels` (see `pretrain_kernels._dispatch`). The test runs `worker` in such subprocesses; by hand,
from tests/, with the results as JSON lines:

    python -c "import triton; from tests.launch_inspection import worker; worker()" \
        launch_inspection:all_launch_configs 0 1
"""

import dataclasses
import importlib
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator

import triton
from triton.backends.compiler import GPUTarget

from pretrain_kernels._launch_config import DTYPES, LaunchConfig

# Compute capability -> the most shared memory (bytes) one block may use, static plus the dynamic amount the
# Triton launcher opts into: 227 KiB on an H100, 163 KiB on an A100.
SHARED_LIMIT = {90: 232448, 80: 166912}
# How the Triton launcher specializes arguments: every pointer and integer divisible by 16 is marked so (the
# usual case: contiguous tensors, widths a multiple of 16), which enables vectorized and asynchronous copies
# and with them pipelining buffers in shared memory; a ragged shape or an offset view is marked nothing.
# Both extremes are compiled: the first needs the most shared memory, the second often the most registers.
ALIGNMENTS = ("aligned", "unaligned")
_FP32_BUFFERS = frozenset({"RSTD", "DW_PARTIAL", "LSE", "DELTA"})  # stats written in fp32 whatever the input
_FLOAT_SCALARS = frozenset({"eps", "scale", "qk_scale"})  # other lower-case scalars are i32
_MARK = "LAUNCH-RESOURCES "


@dataclasses.dataclass(frozen=True)
class Resources:
    """What one compiled config uses per block; `spill_bytes` is cuobjdump's STACK plus LOCAL, the per-thread
    local memory that ptxas spills registers to (0 when nothing spills), `shared_bytes` static plus dynamic."""

    kernel: str
    config: str
    num_warps: int
    num_stages: int
    dtype: str
    alignment: str
    arch: int
    registers: int
    spill_bytes: int
    shared_bytes: int


def all_launch_configs() -> list[LaunchConfig]:
    """Every compile the launchers can ask for on every target in SHARED_LIMIT, duplicates dropped."""
    modules = [importlib.import_module(f"pretrain_kernels.{name}")
               for name in ("rms_norm", "swiglu", "flash_attention")]
    return list(dict.fromkeys(itertools.chain.from_iterable(
        module.launch_configs(arch) for arch in SHARED_LIMIT for module in modules)))


def _signature(config: LaunchConfig, alignment: str) -> tuple[dict[str, str], dict[tuple[int], list]]:
    """Argument types by the kernels' naming: upper-case pointers in the input dtype (fp32 stat buffers),
    lower-case scalars; and the divisibility marks of `alignment`."""
    constexprs = dict(config.constexprs)
    signature, attrs = {}, {}
    for index, name in enumerate(config.kernel.arg_names):
        if name in constexprs:
            signature[name] = "constexpr"
            continue
        if name.isupper():
            signature[name] = "*fp32" if name in _FP32_BUFFERS else f"*{config.dtype}"
        else:
            signature[name] = "fp32" if name in _FLOAT_SCALARS else "i32"
        if alignment == "aligned" and signature[name] != "fp32":
            attrs[(index,)] = [["tt.divisibility", 16]]
    return signature, attrs


def _cuobjdump() -> str:
    try:
        return triton.knobs.nvidia.cuobjdump.path
    except RuntimeError as e:
        raise RuntimeError("cuobjdump not found: reading registers and spills from a compiled kernel needs the "
                           "cuobjdump that ships in the triton wheel (triton/backends/nvidia/bin), or "
                           f"TRITON_CUOBJDUMP_PATH ({e})") from e


def resource_usage(cubin: bytes, kernel_name: str) -> dict[str, int]:
    """What `cuobjdump --dump-resource-usage` says the kernel in `cubin` uses."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        out = subprocess.run([_cuobjdump(), "--dump-resource-usage", path], capture_output=True, text=True,
                             check=True).stdout
    return parse_resource_usage(out, kernel_name)


def parse_resource_usage(out: str, kernel_name: str) -> dict[str, int]:
    """The counters (REG, STACK, SHARED, LOCAL, ...) on the line after `Function <kernel_name>:` in cuobjdump's
    output. Verified against `ptxas -v` on the same PTX: its "N bytes stack frame" (which spill stores fill) is
    STACK; LOCAL stays 0 when registers spill."""
    match = re.search(rf"Function {re.escape(kernel_name)}:\s*\n(.*)", out)
    usage = {} if match is None else {k: int(v) for k, v in re.findall(r"([A-Z]+(?:\[\d+\])?):(\d+)", match[1])}
    if not {"REG", "STACK", "SHARED", "LOCAL"} <= usage.keys():
        raise RuntimeError(f"cannot read REG, STACK, SHARED, LOCAL of {kernel_name} from cuobjdump:\n{out}")
    return usage


def compile_and_inspect(config: LaunchConfig, alignment: str) -> Resources:
    """Compile `config` for its target (no GPU needed) and read what the binary uses."""
    signature, attrs = _signature(config, alignment)
    source = triton.compiler.ASTSource(fn=config.kernel, signature=signature, constexprs=dict(config.constexprs),
                                       attrs=attrs)
    options = {"num_warps": config.num_warps}
    if config.num_stages is not None:
        options["num_stages"] = config.num_stages
    compiled = triton.compile(source, target=GPUTarget("cuda", config.arch, 32), options=options)
    usage = resource_usage(compiled.asm["cubin"], compiled.metadata.name)
    return Resources(
        kernel=config.kernel.__name__, config=config.describe(), num_warps=compiled.metadata.num_warps,
        num_stages=compiled.metadata.num_stages, dtype=config.dtype, alignment=alignment, arch=config.arch,
        registers=usage["REG"], spill_bytes=usage["STACK"] + usage["LOCAL"],
        shared_bytes=compiled.metadata.shared + usage["SHARED"],
    )


def problems(r: Resources) -> list[str]:
    """Why `r` would not launch, or would run with spilled registers; empty when it is fine."""
    found = []
    if r.spill_bytes:
        found.append(f"spills {r.spill_bytes} B")
    if r.shared_bytes > SHARED_LIMIT[r.arch]:
        found.append(f"shared {r.shared_bytes} B > {SHARED_LIMIT[r.arch]} B")
    return found


def worker(argv: list[str] | None = None) -> None:
    """Inspect every SHARDS-th config (from SHARD) that the function SOURCE (MODULE:FUNCTION) returns, at each
    alignment, and print one line per result; argv is [SOURCE SHARD SHARDS], by default sys.argv[1:]."""
    argv = sys.argv[1:] if argv is None else argv
    source, shard, shards = argv[0], int(argv[1]), int(argv[2])
    module, _, function = source.partition(":")
    configs: Callable[[], Iterable[LaunchConfig]] = getattr(importlib.import_module(module), function)
    for config, alignment in list(itertools.product(configs(), ALIGNMENTS))[shard::shards]:
        print(_MARK + json.dumps(dataclasses.asdict(compile_and_inspect(config, alignment))), flush=True)


def parse_worker_output(stdout: str) -> Iterator[Resources]:
    """The results a worker printed."""
    for line in stdout.splitlines():
        if line.startswith(_MARK):
            yield Resources(**json.loads(line[len(_MARK):]))


def table(results: Iterable[Resources]) -> str:
    """One row per (kernel, config, warps, stages, target): the input dtypes that launch it, the most registers,
    spilled bytes and shared memory over those dtypes and both alignments, and which of those fail."""
    rows: dict[tuple, list[Resources]] = {}
    for r in results:
        rows.setdefault((r.kernel, r.config, r.num_warps, r.num_stages, r.arch), []).append(r)
    header = ("kernel", "config", "warps", "stages", "dtypes", "target", "regs", "spill B", "shared B", "limit B",
              "status")
    lines = [header]
    for (kernel, config, warps, stages, arch), group in rows.items():
        dtypes = ",".join(d for d in DTYPES if any(r.dtype == d for r in group))
        failing = [f"{r.dtype}/{r.alignment}: {', '.join(problems(r))}" for r in group if problems(r)]
        lines.append((kernel, config, str(warps), str(stages), dtypes, f"sm_{arch}",
                      str(max(r.registers for r in group)), str(max(r.spill_bytes for r in group)),
                      str(max(r.shared_bytes for r in group)), str(SHARED_LIMIT[arch]),
                      "FAIL " + "; ".join(failing) if failing else "ok"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(line, widths)), line[-1]]) for line in lines)
