"""`pretrain gpu-check OUT_DIR [--dry-run]`: the GPU path checked and measured by one command, in minutes.

Parts, each in a process of its own with a time cap, so that a crash, a hang or a broken CUDA context in one is
recorded and the others still run (rows are written as they come, so a part cut short keeps what it measured):

    kernels-bf16, kernels-fp16   every kernel against its PyTorch reference, output and every input gradient,
                                 at the 1B model's shapes and ragged ones
    bench-1b, bench-10b          `pretrain.benchmarks.kernels` at the shapes of configs/1b.yaml and 10b.yaml
    train-kernels, train-torch   training steps of configs/1b.yaml cut to TRAIN_LAYERS layers, on one GPU under
                                 DeepSpeed with the kernels on and off: tokens/s, MFU, peak memory

Writes OUT_DIR/gpu_check.json (everything, with the GPU, driver, CUDA, torch and triton versions) and
OUT_DIR/gpu_check.md (the tables, ready to paste into the README). With --dry-run it runs the same code on the
CPU at tiny shapes, the kernels under Triton's interpreter, and writes the same files: CI runs that.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from ..errors import UserError
from ..fileio import write_json, write_text
from ..outputs import Kind, check_output, claim
from . import CONFIGS, figure

TRAIN_LAYERS = 2  # of configs/1b.yaml's 12: the step's shape (width, heads, MLP, vocab, sequence) is the 1B's
TRAIN_STEPS = {False: (3, 10), True: (1, 1)}  # (warm-up, timed) steps; dry run: interpreted kernels are slow
# part -> seconds allowed (process start included); 430 s in all, inside 8 minutes with the launch overhead
PARTS = {"kernels-bf16": 45, "kernels-fp16": 45, "bench-1b": 100, "bench-10b": 100, "train-kernels": 70,
         "train-torch": 70}
TOLERANCE = {"bfloat16": 5e-2, "float16": 1e-2}  # of the kernel against an fp32 reference


def run_gpu_check(out: str | Path, dry_run: bool, overwrite: bool = False) -> dict:
    """Run every part in its own process; returns (and writes) the report. `out` follows `pretrain.outputs`'
    rule: with `overwrite`, only an earlier gpu-check's results are replaced."""
    import torch

    if not dry_run and not torch.cuda.is_available():
        raise UserError("gpu-check: no CUDA GPU is visible; run it on a GPU node, or pass --dry-run to check the "
                        "code paths on this CPU")
    out = check_output(out, "OUT_DIR", Kind.WORKSPACE, "gpu-check", overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    claim(out, "gpu-check")
    report = {"environment": environment(dry_run), "parts": {}}
    for part, seconds in PARTS.items():
        report["parts"][part] = _run_part(part, seconds, out, dry_run)
        status = report["parts"][part]["status"]
        print(f"{part:<14} {status:<60.60} {report['parts'][part]['seconds']:>6.1f} s", flush=True)
    write_json(out / "gpu_check.json", report)
    write_text(out / "gpu_check.md", markdown(report))
    return report


def environment(dry_run: bool) -> dict:
    import torch
    import triton

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() and not dry_run else None
    return {
        "dry_run": dry_run, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "gpu": gpu or f"none (dry run on {platform.processor() or platform.machine()})",
        "driver": _driver_version() if gpu else None, "cuda": torch.version.cuda, "torch": torch.__version__,
        "triton": triton.__version__, "python": platform.python_version(),
    }


def _driver_version() -> str | None:
    try:
        proc = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30)
        return proc.stdout.strip().splitlines()[0] if proc.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return None


def _run_part(part: str, seconds: int, out: Path, dry_run: bool) -> dict:
    rows_file = out / "parts" / f"{part}.jsonl"
    rows_file.parent.mkdir(parents=True, exist_ok=True)
    rows_file.unlink(missing_ok=True)
    env = dict(os.environ)
    if dry_run:  # the CPU, with the kernels interpreted (also on a machine that has a GPU)
        env.update(TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    command = [sys.executable, "-m", "pretrain.benchmarks.gpu_check", part, str(rows_file),
               *(["--dry-run"] if dry_run else [])]
    started = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=seconds, env=env)
        status = "ok" if proc.returncode == 0 else f"failed: {_last_line(proc.stderr)}"
    except subprocess.TimeoutExpired:
        status = f"timed out after {seconds} s (rows so far kept)"
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()] if rows_file.exists() else []
    return {"status": status, "seconds": round(time.perf_counter() - started, 1), "rows": rows}


def failed_parts(report: dict) -> list[str]:
    """The parts that did not end ok (failed or timed out), in the order they ran."""
    return [name for name, part in report["parts"].items() if part["status"] != "ok"]


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


# --- the parts (each runs in its own process) ----------------------------------------------------------------

def check_kernels(dtype_name: str, dry_run: bool) -> Iterator[dict]:
    """Each kernel against its reference (fp32 copies of the same rounded inputs): the largest absolute error of
    the output and of every input gradient, against the dtype's tolerance."""
    import torch

    from pretrain_kernels.flash_attention import flash_attention, flash_attention_reference
    from pretrain_kernels.rms_norm import rms_norm, rms_norm_reference
    from pretrain_kernels.swiglu import swiglu, swiglu_reference

    from .kernels import model_shape, tiny_shape

    device, dtype = "cpu" if dry_run else "cuda", getattr(torch, dtype_name)
    shape = tiny_shape("1b") if dry_run else model_shape("1b")
    seq = shape.seq_lens[0]
    ragged = 37 if dry_run else 1000  # rows and sequence lengths no tile divides
    heads, kv_heads = shape.n_heads, max(1, shape.n_heads // 4)  # GQA, as the configs can ask for
    cases = {
        "rms_norm": (rms_norm, rms_norm_reference, [(shape.tokens, shape.d_model)]),
        "rms_norm (ragged)": (rms_norm, rms_norm_reference, [(ragged, shape.d_model)]),
        "swiglu": (swiglu, swiglu_reference, [(shape.tokens, shape.d_ff)] * 2),
        "attention": (_causal(flash_attention, shape.head_dim), _causal(flash_attention_reference,
                      shape.head_dim), [(shape.tokens // seq, heads, seq, shape.head_dim)] * 3),
        "attention (GQA, ragged)": (
            _causal(flash_attention, shape.head_dim),
            _causal(flash_attention_reference, shape.head_dim),
            [(2, heads, ragged, shape.head_dim), (2, kv_heads, ragged, shape.head_dim),
             (2, kv_heads, ragged, shape.head_dim)]),
    }
    torch.manual_seed(0)
    for name, (op, reference, shapes) in cases.items():
        inputs = [torch.randn(s, device=device, dtype=dtype, requires_grad=True) for s in shapes]
        references = [t.detach().float().requires_grad_() for t in inputs]
        out, want = op(*inputs), reference(*references)
        grad = torch.randn_like(want)
        out.backward(grad.to(dtype))
        want.backward(grad)
        errors = {"output": (out.float() - want).abs().max().item()}
        errors.update({f"grad {i}": (t.grad.float() - r.grad).abs().max().item()
                       for i, (t, r) in enumerate(zip(inputs, references))})
        scale = max(1.0, want.abs().max().item())
        tolerance = TOLERANCE[dtype_name] * scale
        yield {"op": name, "dtype": dtype_name, "shape": " ".join("x".join(map(str, s)) for s in shapes),
               "max_error": max(errors.values()), "errors": errors, "tolerance": tolerance,
               "ok": all(e <= tolerance for e in errors.values())}


def _causal(op: Callable, head_dim: int) -> Callable:
    return lambda q, k, v: op(q, k, v, causal=True, scale=1.0 / head_dim)


def bench_kernels(config: str, dry_run: bool) -> Iterator[dict]:
    from .kernels import DRY_RUN, GPU, bench_shape, model_shape, tiny_shape

    shape = tiny_shape(config) if dry_run else model_shape(config)
    for result in bench_shape(shape, DRY_RUN if dry_run else GPU):
        yield asdict(result)


def bench_training(use_kernels: bool, dry_run: bool) -> Iterator[dict]:
    """Steps of configs/1b.yaml at TRAIN_LAYERS layers on random tokens, through the stack's own engine."""
    import torch

    from ..config import load_config
    from ..model.flops import flops_per_token
    from ..model.loss import lm_loss
    from ..model.transformer import build_model
    from ..training import distributed as dist
    from ..training.engine import build_engine, init_distributed
    from ..training.metrics import mfu, peak_flops, peak_memory_gib
    from ..training.optim import build_optimizer

    # the interpreter runs a kernel's programs one at a time, about one per token row: a step costs its tokens
    tiny = ["model.d_model=64", "model.head_dim=32", "data.vocab_size=512", "data.seq_len=64",
            "train.micro_batch_size=1", "deepspeed.zero_stage=0"]
    overrides = [f"model.n_layers={TRAIN_LAYERS}", f"model.use_kernels={str(use_kernels).lower()}",
                 "train.global_batch_size=null", "train.activation_checkpointing=false", *(tiny if dry_run else [])]
    cfg = load_config(CONFIGS / "1b.yaml", overrides)
    device = dist.pick_device("cpu" if dry_run else "cuda")
    init_distributed(device)
    model = build_model(cfg.model, cfg.vocab_size, seed=0, device=device)
    engine = build_engine(cfg, model, build_optimizer(model, cfg.model, cfg.optim), 1, device)
    batch = torch.randint(0, cfg.vocab_size, (cfg.train.micro_batch_size, cfg.data.seq_len + 1), device=device)
    warmup, timed = TRAIN_STEPS[dry_run]

    def step() -> None:
        engine.backward(lm_loss(engine, batch))
        engine.step()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(timed):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / timed
    tokens_per_s = cfg.train.micro_batch_size * cfg.data.seq_len / seconds
    peak = peak_flops(device, None)
    yield {"model": f"1B shape, {TRAIN_LAYERS} of 12 layers", "kernels": use_kernels,
           "precision": "bf16" if device.type == "cuda" else "fp32",
           "batch": f"{cfg.train.micro_batch_size} x {cfg.data.seq_len}", "step_ms": seconds * 1e3,
           "tokens_per_s": tokens_per_s, "mfu": mfu(flops_per_token(cfg), tokens_per_s, 1, peak) if peak else None,
           "peak_memory_gib": peak_memory_gib(device)}


PART_RUNNERS: dict[str, Callable[[bool], Iterator[dict]]] = {
    "kernels-bf16": lambda dry: check_kernels("bfloat16", dry),
    "kernels-fp16": lambda dry: check_kernels("float16", dry),
    "bench-1b": lambda dry: bench_kernels("1b", dry),
    "bench-10b": lambda dry: bench_kernels("10b", dry),
    "train-kernels": lambda dry: bench_training(True, dry),
    "train-torch": lambda dry: bench_training(False, dry),
}


def _run_part_here(part: str, rows_file: Path, dry_run: bool) -> None:
    """In the part's own process: append each row to `rows_file` as soon as it exists."""
    with rows_file.open("a") as f:
        for row in PART_RUNNERS[part](dry_run):
            f.write(json.dumps(row) + "\n")
            f.flush()


# --- the report ------------------------------------------------------------------------------------------------

def markdown(report: dict) -> str:
    env, parts = report["environment"], report["parts"]
    lines = [f"GPU: {env['gpu']}; driver {env['driver']}, CUDA {env['cuda']}, torch {env['torch']}, triton "
             f"{env['triton']}; {env['date']}" + (" (dry run: figures are not GPU figures)" if env["dry_run"] else ""),
             "", "| part | status | seconds |", "|---|---|---:|"]
    lines += [f"| {name} | {p['status']} | {p['seconds']:.0f} |" for name, p in parts.items()]
    lines += ["", "Kernels against their references (max abs error over the output and every input gradient):", "",
              "| op | dtype | shape | max error | tolerance | ok |", "|---|---|---|---:|---:|---|"]
    for name in ("kernels-bf16", "kernels-fp16"):
        lines += [f"| {r['op']} | {r['dtype']} | {r['shape']} | {r['max_error']:.2e} | {r['tolerance']:.1e} | "
                  f"{'yes' if r['ok'] else 'NO'} |" for r in parts[name]["rows"]]
    lines += ["", "Kernel speed (attention TFLOP/s, RMSNorm and SwiGLU GB/s; forward, backward):", "",
              "| op | model | shape | impl | fwd ms | bwd ms | fwd | bwd |", "|---|---|---|---|---:|---:|---:|---:|"]
    for name in ("bench-1b", "bench-10b"):
        for r in parts[name]["rows"]:
            cells = [figure(r["fwd_ms"], ".3f"), figure(r["bwd_ms"], ".3f"), figure(r["fwd_rate"], ".1f"),
                     figure(r["bwd_rate"], ".1f")]
            impl = r["impl"] + (f" (error: {r['error']})" if r["error"] else "")
            lines.append(f"| {r['op']} | {r['model']} | {r['shape']} | {impl} | " + " | ".join(cells) + " |")
    lines += ["", "Training step (one GPU, DeepSpeed, the 1B model's shapes):", "",
              "| model | kernels | precision | batch | step ms | tokens/s | MFU | peak memory GiB |",
              "|---|---|---|---|---:|---:|---:|---:|"]
    for name in ("train-kernels", "train-torch"):
        lines += [f"| {r['model']} | {'on' if r['kernels'] else 'off'} | {r['precision']} | {r['batch']} | "
                  f"{r['step_ms']:.1f} | {r['tokens_per_s']:,.0f} | {figure(r['mfu'], '.1%')} | "
                  f"{r['peak_memory_gib']:.2f} |" for r in parts[name]["rows"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    name, rows_path, *flags = sys.argv[1:]
    _run_part_here(name, Path(rows_path), dry_run="--dry-run" in flags)
