"""What a config costs: parameters, training FLOPs per token, and memory per GPU under each ZeRO stage.

    Ψ parameters, N GPUs, L layers, T = seq_len, d = d_model, H·D = heads × head_dim, V = vocab, F = MLP width

    FLOPs per token: 6·N_mm + 6·L·T·H·D (see `pretrain.model.flops`)
    Training FLOPs: train.steps × tokens per step × FLOPs per token; time to train on N GPUs: that over
        N × per-GPU peak × MFU (--mfu, 40% by default; the peak is --peak-tflops, else train.peak_flops, else the
        H100's dense bf16 989 TFLOP/s)

    Model states per GPU (bf16 params and grads, fp32 master weights + Adam moments: 2 + 2 + 12 bytes/param)
        stage 0: 16Ψ      stage 1: 4Ψ + 12Ψ/N      stage 2: 2Ψ + 14Ψ/N      stage 3: 16Ψ/N
    ZeRO-Offload keeps the gradient partition and the optimizer states in CPU memory instead (stages 1-3). ZeRO-3
    also needs one gathered layer at a time (bf16 weights and grads: 4 bytes × the largest module's params).

    Activations saved for the backward, per token of a micro batch (bf16, fused kernels, no dropout)
        per layer: 2 · (4d + 3·H·D + 2·Hkv·D + k·F) bytes   (k = 3 SwiGLU, 2 squared ReLU, 1 ReLU)
            norm inputs 2d, projection inputs 2d, q, k, v, the attention output and wo's input,
            and the MLP's hidden tensors
        loss head: 10·V bytes (bf16 logits, their fp32 copy, fp32 log-softmax)
        without checkpointing: L layers + head;  with: L block inputs (2d each) + one layer recomputed + head
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..config import Config
from ..errors import ConfigError
from ..model.flops import ParamCount, attention_flops_per_token, count_params, flops_per_token
from ..training.metrics import PEAK_FLOPS

GiB = 2**30
BYTES = {"params": 2, "grads": 2, "optimizer": 12}  # bf16 params and grads; fp32 master, momentum, variance
USABLE = 0.9  # share of GPU memory left once the CUDA context, comm buffers and fragmentation take theirs
_MLP_HIDDEN = {"swiglu": 3, "relu2": 2, "relu": 1}  # hidden (B, T, F) tensors the MLP saves for the backward


def model_state_bytes(n_params: int, stage: int, world_size: int) -> dict[str, float]:
    """Bytes per GPU of params, grads and optimizer states under ZeRO `stage` (2 + 2 + 12 bytes/param)."""
    partitioned = {"optimizer": stage >= 1, "grads": stage >= 2, "params": stage >= 3}
    return {k: BYTES[k] * n_params / (world_size if partitioned[k] else 1) for k in BYTES}


def activation_bytes(cfg: Config, checkpointing: bool) -> float:
    """Activations saved for the backward of one micro batch on one GPU (see the module docstring)."""
    m = cfg.model
    per_layer = 2 * (4 * m.d_model + 3 * m.n_heads * m.head_dim + 2 * m.kv_heads * m.head_dim
                     + _MLP_HIDDEN[m.mlp] * m.ffn_dim)
    head = 10 * cfg.vocab_size
    stored = m.n_layers * 2 * m.d_model + per_layer if checkpointing else m.n_layers * per_layer
    return cfg.train.micro_batch_size * cfg.data.seq_len * (stored + head)


@dataclass
class StageEstimate:
    stage: int
    gpu: dict[str, float]  # bytes per GPU: params, grads, optimizer, zero3 gathered layer, activations
    cpu: float  # bytes per GPU held in CPU memory instead (ZeRO-Offload: gradient partition, optimizer states)
    fits: bool
    fewest_gpus: int | None  # the fewest GPUs that fit this stage and divide the batch; None = none to MAX_GPUS

    @property
    def gpu_total(self) -> float:
        return sum(self.gpu.values())


MAX_GPUS = 2**16


def stage_estimate(cfg: Config, params: ParamCount, stage: int, gpus: int, gpu_mem_gib: float) -> StageEstimate:
    activations = activation_bytes(cfg, cfg.train.activation_checkpointing)  # per GPU, whatever the world size

    def per_gpu(world: int) -> tuple[dict[str, float], float]:
        gpu = model_state_bytes(params.total, stage, world)
        offloaded = ("grads", "optimizer") if cfg.deepspeed.offload_optimizer and stage >= 1 else ()
        cpu = sum(gpu.pop(kind) for kind in offloaded)
        gpu["gathered layer"] = 4 * params.largest_layer if stage == 3 else 0.0
        gpu["activations"] = activations
        return gpu, cpu

    def fits(world: int) -> bool:
        return sum(per_gpu(world)[0].values()) <= USABLE * gpu_mem_gib * GiB

    gpu, cpu = per_gpu(gpus)
    return StageEstimate(stage, gpu, cpu, fits(gpus), _fewest(cfg, fits))


def runs_batch(cfg: Config, gpus: int) -> bool:
    """Whether `gpus` processes can run the config's batch: the global batch a multiple of micro batch × GPUs, by
    the rule training itself applies (`TrainConfig.accumulation`)."""
    try:
        cfg.train.accumulation(gpus)
    except ConfigError:
        return False
    return True


def _fewest(cfg: Config, fits: Callable[[int], bool]) -> int | None:
    """The smallest n ≤ MAX_GPUS with fits(n) that also runs the batch. Memory per GPU only falls as n grows, so
    bisection finds the fewest that fit, and every count above them fits too: the first that runs the batch."""
    if not fits(MAX_GPUS):
        return None
    lo, hi = 0, MAX_GPUS  # fits(hi) holds; fits(lo) does not (or lo == 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return next((n for n in range(hi, MAX_GPUS + 1) if runs_batch(cfg, n)), None)


@dataclass(frozen=True)
class Throughput:
    """What the time to train assumes: each GPU's peak FLOP/s, the share of it the run reaches, and where the peak
    came from (said beside the figure)."""

    peak_flops: float
    mfu: float
    source: str

    def seconds(self, flops: float, gpus: int) -> float:
        return flops / (gpus * self.peak_flops * self.mfu)


def throughput(cfg: Config, mfu: float, peak_tflops: float | None) -> Throughput:
    """The peak from --peak-tflops, else the config's train.peak_flops, else the H100's dense bf16."""
    if peak_tflops is not None:
        return Throughput(peak_tflops * 1e12, mfu, "--peak-tflops")
    if cfg.train.peak_flops is not None:
        return Throughput(cfg.train.peak_flops, mfu, "train.peak_flops")
    return Throughput(PEAK_FLOPS["H100"], mfu, "default: the H100's dense bf16; see --peak-tflops")


def training_flops(cfg: Config, gpus: int, per_token: float) -> float:
    """FLOPs of the whole run: train.steps × tokens per step × FLOPs per token."""
    return cfg.train.steps * cfg.tokens_per_step(gpus) * per_token


def estimate(cfg: Config, gpus: int, gpu_mem_gib: float, speed: Throughput) -> dict:
    """Everything `pretrain estimate` prints, as plain numbers."""
    params = count_params(cfg.model, cfg.vocab_size)
    per_token = flops_per_token(cfg, params)
    stages = [stage_estimate(cfg, params, stage, gpus, gpu_mem_gib) for stage in range(4)]
    counts = {gpus, *(s.fewest_gpus for s in stages if s.fewest_gpus)}
    return {
        "params": params,
        "flops_per_token": per_token,
        "attention_flops_per_token": attention_flops_per_token(cfg),
        "tokens_per_step": cfg.tokens_per_step(gpus),
        "training_flops": training_flops(cfg, gpus, per_token),
        # with train.global_batch_size unset the batch, so the run's FLOPs, grow with the GPU count
        "seconds_to_train": {n: speed.seconds(training_flops(cfg, n, per_token), n) for n in sorted(counts)},
        "activations": {ckpt: activation_bytes(cfg, ckpt) for ckpt in (False, True)},
        "stages": stages,
    }


def format_estimate(cfg: Config, gpus: int, gpu_mem_gib: float, speed: Throughput) -> str:
    e, m, t = estimate(cfg, gpus, gpu_mem_gib, speed), cfg.model, cfg.train
    p: ParamCount = e["params"]
    to_train = {n: duration(seconds) for n, seconds in e["seconds_to_train"].items()}
    gib = lambda b: f"{b / GiB:,.1f}"  # noqa: E731
    fewest = (f"fit and divide the global batch of {t.global_batch_size:,} sequences (micro batch "
              f"{t.micro_batch_size})" if t.global_batch_size is not None
              else "fit (train.global_batch_size unset: any count runs the batch)")
    lines = [
        f"model        d_model {m.d_model}, {m.n_layers} layers, {m.n_heads} heads × {m.head_dim}, {m.mlp} MLP "
        f"{m.ffn_dim}, vocab {cfg.vocab_size}, seq {cfg.data.seq_len}",
        f"parameters   {p.total:,} total, {p.non_embedding:,} non-embedding (largest module {p.largest_layer:,})",
        f"FLOPs/token  {e['flops_per_token'] / 1e9:.4g} G for training = 6·N_mm {6 * p.matmul / 1e9:.4g} G + "
        f"attention 6·L·T·H·D {e['attention_flops_per_token'] / 1e9:.4g} G",
        f"batch        {e['tokens_per_step']:,} tokens/step at {gpus} GPUs; "
        f"{e['flops_per_token'] * e['tokens_per_step']:.3g} FLOPs/step",
        f"training     {t.steps:,} steps × {e['tokens_per_step']:,} tokens/step × {e['flops_per_token'] / 1e9:.4g} G "
        f"FLOPs/token = {e['training_flops']:.4g} FLOPs",
        f"time         {to_train[gpus]} at {gpus} GPUs: {speed.mfu:.0%} MFU of {speed.peak_flops / 1e12:.4g} TFLOP/s "
        f"per GPU ({speed.source})",
        f"activations  {gib(e['activations'][False])} GiB per GPU without checkpointing, "
        f"{gib(e['activations'][True])} GiB with (micro batch {cfg.train.micro_batch_size}; this config: "
        f"{'on' if cfg.train.activation_checkpointing else 'off'})",
        "",
        f"GiB per GPU at {gpus} GPUs of {gpu_mem_gib:g} GiB ({USABLE:.0%} usable); bf16 params + grads, fp32 "
        f"master + Adam{', optimizer offloaded to CPU' if cfg.deepspeed.offload_optimizer else ''}",
        f"fewest = fewest GPUs that {fewest}; time = to train on them",
        f"{'ZeRO':<5}{'params':>9}{'grads':>9}{'optim':>9}{'layer':>9}{'activ':>9}{'total':>9}{'CPU':>9}"
        f"{'fits':>6}{'fewest':>8}{'time':>11}",
    ]
    for s in e["stages"]:
        g, n = s.gpu, s.fewest_gpus
        lines.append(f"{s.stage:<5}{gib(g['params']):>9}{gib(g.get('grads', 0)):>9}{gib(g.get('optimizer', 0)):>9}"
                     f"{gib(g['gathered layer']):>9}{gib(g['activations']):>9}{gib(s.gpu_total):>9}{gib(s.cpu):>9}"
                     f"{'yes' if s.fits else 'no':>6}{n or 'none':>8}{to_train[n] if n else '-':>11}")
    return "\n".join(lines)


def duration(seconds: float) -> str:
    """Seconds in the largest unit that keeps the figure at 2 or more: "84 days", "12.1 hours", "45 s"."""
    for unit, size in (("days", 86400), ("hours", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"
