"""`pretrain estimate`: ZeRO memory against DeepSpeed's own estimators, activations, the fewest GPUs that fit;
the proxies differ from the targets only in width."""

from pathlib import Path

import pytest
from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

from pretrain.cli import main
from pretrain.config import load_config
from pretrain.model.flops import count_params
from pretrain.tools.estimate import activation_bytes, model_state_bytes, stage_estimate
from tests.helpers import ROOT

PROXIES = sorted((ROOT / "configs" / "proxies").glob("*.yaml"))


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


def test_fewest_gpus_is_the_smallest_count_that_fits(cfg_10b):
    params = count_params(cfg_10b.model, cfg_10b.vocab_size)
    stages = [stage_estimate(cfg_10b, params, stage, 64, 80) for stage in range(4)]
    assert stages[0].fewest_gpus is None and not stages[0].fits  # 16 bytes/param: 152 GiB before activations
    for s in stages[1:]:
        assert s.fits
        assert stage_estimate(cfg_10b, params, s.stage, s.fewest_gpus, 80).fits
        assert not stage_estimate(cfg_10b, params, s.stage, s.fewest_gpus - 1, 80).fits
    assert stages[3].fewest_gpus <= stages[2].fewest_gpus <= stages[1].fewest_gpus


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
    assert rows[0][-2:] == ["no", "none"] and rows[3][-2] == "yes"
