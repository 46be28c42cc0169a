"""`pretrain estimate`: ZeRO memory against DeepSpeed's own estimators, activations, the fewest GPUs that fit and
run the batch, the run's FLOPs and time to train; the proxies differ from the targets only in width."""

from pathlib import Path

import pytest
from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

from pretrain.cli import main
from pretrain.config import load_config
from pretrain.config.schema import MAX_VOCAB, MAX_WIDTH
from pretrain.errors import ExitCode
from pretrain.model.flops import count_params
from pretrain.tools.estimate import activation_bytes, duration, model_state_bytes, stage_estimate
from tests.helpers import ROOT

PROXIES = sorted((ROOT / "configs" / "proxies").glob("*.yaml"))
H100 = 989e12  # dense bf16 FLOP/s: the peak `estimate` assumes by default


@pytest.fixture(scope="module")
def cfg_10b():
    return load_config(ROOT / "configs" / "10b.yaml")


@pytest.mark.parametrize("target", ["1b.yaml", "10b.yaml"])
def test_proxies_differ_from_the_targets_only_in_width_steps_and_batch(target):
    """Model (but width), data, tokenizer and optimizer are the same; the train and deepspeed sections may differ."""
    def shared(path: Path) -> dict:
        raw = load_config(path).to_dict()
        return {"width": raw["model"].pop("d_model"), **{k: raw[k] for k in ("model", "data", "optim")}}

    want = shared(ROOT / "configs" / target)
    proxies = [shared(path) for path in PROXIES]
    assert sorted(p.pop("width") for p in proxies) == [128, 256, 512, 1024]
    for proxy in proxies:
        assert proxy == {k: v for k, v in want.items() if k != "width"}


@pytest.mark.parametrize("gpus_per_node, nodes", [(8, 1), (8, 8)])
def test_model_states_agree_with_deepspeeds_estimators(cfg_10b, gpus_per_node, nodes):
    """DeepSpeed's estimators add the fp32 copy of the gradient partition its ZeRO optimizers make at the step
    (4 bytes/param/N); for ZeRO-3 they leave out the bf16 gradient partition (2 bytes/param/N). Offloaded,
    both count only what stays on the GPU, as ours does."""
    params = count_params(cfg_10b.model, cfg_10b.vocab_size)
    n, gpus = params.total, gpus_per_node * nodes

    def ours(stage: int, offload: bool = False) -> float:
        cfg_10b.deepspeed.offload_optimizer = offload
        try:
            gpu = stage_estimate(cfg_10b, params, stage, gpus, 80).gpu
        finally:
            cfg_10b.deepspeed.offload_optimizer = False
        return sum(gpu.values()) - gpu["activations"]

    assert ours(2) == sum(model_state_bytes(n, 2, gpus).values()) == 2 * n + 14 * n / gpus
    _, zero2 = estimate_zero2_model_states_mem_needs(n, gpus_per_node, nodes, cpu_offload=False)
    assert zero2 == pytest.approx(ours(2) + 4 * n / gpus, abs=1)
    _, zero2_offload = estimate_zero2_model_states_mem_needs(n, gpus_per_node, nodes, cpu_offload=True)
    assert zero2_offload == ours(2, offload=True) == 2 * n

    _, zero3, layer = estimate_zero3_model_states_mem_needs(n, params.largest_layer, gpus_per_node, nodes,
                                                            cpu_offload=False, cpu_offload_params=False)
    assert layer == 4 * params.largest_layer
    assert zero3 == pytest.approx(ours(3) + 2 * n / gpus, abs=1)
    _, zero3_offload, _ = estimate_zero3_model_states_mem_needs(n, params.largest_layer, gpus_per_node, nodes,
                                                                cpu_offload=True, cpu_offload_params=False)
    assert zero3_offload == pytest.approx(ours(3, offload=True), abs=1)


def test_fewest_gpus_is_the_smallest_count_that_fits_and_divides_the_batch(cfg_10b):
    params = count_params(cfg_10b.model, cfg_10b.vocab_size)
    stages = [stage_estimate(cfg_10b, params, stage, 64, 80) for stage in range(4)]
    t = cfg_10b.train

    def runs(stage: int, n: int) -> bool:
        return t.global_batch_size % (t.micro_batch_size * n) == 0 and stage_estimate(
            cfg_10b, params, stage, n, 80).fits

    assert stages[0].fewest_gpus is None and not stages[0].fits  # 16 bytes/param: 152 GiB before activations
    for s in stages[1:]:
        assert s.fits and runs(s.stage, s.fewest_gpus)
        assert not any(runs(s.stage, n) for n in range(1, s.fewest_gpus))
    assert stages[3].fewest_gpus <= stages[2].fewest_gpus <= stages[1].fewest_gpus
    # ZeRO-3 fits on 3, but 1024 sequences do not split into micro batches of 4 over 3 GPUs
    assert stage_estimate(cfg_10b, params, 3, 3, 80).fits and stages[3].fewest_gpus == 4


def test_activation_checkpointing_keeps_one_layer_and_the_block_inputs(cfg_10b):
    full, ckpt = activation_bytes(cfg_10b, False), activation_bytes(cfg_10b, True)
    tokens = cfg_10b.train.micro_batch_size * cfg_10b.data.seq_len
    head = 10 * cfg_10b.vocab_size * tokens
    per_layer = (full - head) / 12
    assert ckpt == pytest.approx(head + per_layer + 12 * 2 * 8192 * tokens)
    assert ckpt < full / 4


def test_estimate_command_prints_every_stage(capsys):
    assert main(["estimate", str(ROOT / "configs" / "10b.yaml"), "--gpus", "64", "--gpu-mem", "80"]) == 0
    out = capsys.readouterr().out
    assert "10,200,547,328 total, 9,676,259,328 non-embedding" in out
    assert "FLOPs/token" in out and "activations" in out
    rows = [line.split() for line in out.splitlines() if line[:1].isdigit()]
    assert [r[0] for r in rows] == ["0", "1", "2", "3"]
    assert rows[0][-3:] == ["no", "none", "-"] and rows[3][-4] == "yes"


def _fewest_gpus(out: str, stage: int) -> int:
    """The fewest-GPUs column of `stage`'s row, under the header that says what the count means."""
    assert "fewest = fewest GPUs that fit and divide the global batch of 1,024 sequences" in out
    row = next(line.split() for line in out.splitlines() if line.startswith(f"{stage} "))
    return int(row[-3])


def test_the_fewest_gpus_printed_is_a_count_the_run_accepts(capsys):
    assert main(["estimate", "10b", "--gpus", "64"]) == ExitCode.OK
    fewest = _fewest_gpus(capsys.readouterr().out, stage=3)
    assert main(["estimate", "10b", "--gpus", str(fewest)]) == ExitCode.OK
    assert _fewest_gpus(capsys.readouterr().out, stage=3) == fewest
    assert main(["estimate", "10b", "--gpus", str(fewest - 1)]) == ExitCode.USER_ERROR  # 3: fits, but not the batch
    assert "not a multiple of train.micro_batch_size × processes" in capsys.readouterr().err


def _training_flops(cfg) -> float:
    """steps × tokens per step × (6·N_mm + 6·L·T·H·D), from the config's shapes: attention's q, k, v, o, the
    SwiGLU MLP's three matrices and the readout (no biases, no norm gains in this config)."""
    m, d, seq = cfg.model, cfg.model.d_model, cfg.data.seq_len
    per_layer = 2 * d * m.n_heads * m.head_dim + 2 * d * m.kv_heads * m.head_dim + 3 * d * m.ffn_dim
    n_matmul = m.n_layers * per_layer + cfg.vocab_size * d
    assert n_matmul + cfg.vocab_size * d == 10_200_547_328  # with the embedding: the total the command prints
    per_token = 6 * n_matmul + 6 * m.n_layers * seq * m.n_heads * m.head_dim
    return cfg.train.steps * cfg.train.global_batch_size * seq * per_token


def test_estimate_prints_the_runs_flops_and_time_to_train(cfg_10b, capsys):
    flops = _training_flops(cfg_10b)
    assert main(["estimate", "10b", "--gpus", "64"]) == ExitCode.OK
    out = capsys.readouterr().out
    assert f"training     90,000 steps × 2,097,152 tokens/step × 60.84 G FLOPs/token = {flops:.4g} FLOPs" in out
    days = flops / (64 * H100 * 0.4) / 86400
    assert f"time         {days:.3g} days at 64 GPUs: 40% MFU of 989 TFLOP/s per GPU (default: the H100's" in out
    fewest = _fewest_gpus(out, stage=3)
    row = next(line.split() for line in out.splitlines() if line.startswith("3 "))
    assert row[-4:] == ["yes", str(fewest), f"{flops / (fewest * H100 * 0.4) / 86400:.3g}", "days"]

    assert main(["estimate", "10b", "--gpus", "8", "--mfu", "0.5", "--peak-tflops", "312"]) == ExitCode.OK
    days = flops / (8 * 312e12 * 0.5) / 86400
    assert f"time         {days:.3g} days at 8 GPUs: 50% MFU of 312 TFLOP/s per GPU (--peak-tflops)" in \
        capsys.readouterr().out
    assert main(["estimate", "10b", "--gpus", "8", "train.peak_flops=7.56e14"]) == ExitCode.OK
    days = flops / (8 * 756e12 * 0.4) / 86400
    assert f"{days:.3g} days at 8 GPUs: 40% MFU of 756 TFLOP/s per GPU (train.peak_flops)" in capsys.readouterr().out


@pytest.mark.parametrize("mfu", ["0", "-0.4", "1.01", "nan", "inf", "forty"])
def test_mfu_outside_0_to_1_is_refused(mfu, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["estimate", "10b", "--mfu", mfu])
    assert exit_.value.code == ExitCode.USER_ERROR
    assert f"argument --mfu: expected a number > 0 and <= 1, got {mfu!r}" in capsys.readouterr().err


@pytest.mark.parametrize("seconds, text", [(45, "45 s"), (150, "2.5 min"), (3 * 3600, "3 hours"),
                                           (47 * 3600, "47 hours"), (84.04 * 86400, "84 days")])
def test_duration_picks_the_largest_unit_that_keeps_2_or_more(seconds, text):
    assert duration(seconds) == text


def test_estimate_counts_the_largest_model_a_config_allows(capsys):
    """Counted on the meta device and in exact integers: the widest model with the largest vocabulary, and a run
    as long as 64-bit integers go, are figures, not an allocation or a float overflow."""
    argv = ["estimate", ROOT / "configs" / "tiny.yaml", f"model.d_model={MAX_WIDTH}", f"data.vocab_size={MAX_VOCAB}",
            f"train.steps={2**63 - 1}", f"data.seq_len={2**63 - 1}"]
    assert main([str(a) for a in argv]) == ExitCode.OK
    params = count_params(load_config(argv[1], [str(a) for a in argv[2:]]).model, MAX_VOCAB)
    assert f"parameters   {params.total:,} total" in capsys.readouterr().out
