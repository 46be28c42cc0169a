"""The ablation configs: each is the proxy with one change of the paper, and apply-lr knows which ones broke
transfer there (the paper's verdicts as `paper_table.ROWS` lists them)."""


import pytest

from pretrain.config import load_config
from pretrain.model.transformer import build_model
from pretrain.transfer.apply_lr import breaking_settings, config_differences
from pretrain.transfer.paper_table import ROWS
from tests.helpers import CONFIGS

# ablation -> the settings it changes beyond width
ABLATIONS = {
    "bias": ["model.bias"],
    "norm_gains": ["model.norm_gains"],
    "norm_gains_scalar": ["model.norm_gains"],
    "qk_scale_sp": ["model.qk_scale"],
    "weight_decay_coupled": ["optim.weight_decay", "optim.weight_decay_mode"],
    "zero_query_off": ["model.zero_query"],
    "readout_sp": ["model.readout_init"],
    "mlp_relu2": ["model.mlp"],
    "mlp_relu": ["model.mlp"],
    "mqa": [],  # the KV head count follows width, so apply-lr lets it differ
    "gqa": [],
    "schedule_cosine": ["optim.schedule"],
    "lion": ["optim.name", "optim.beta2"],  # Lion with its own β2
}
BROKE = {row.name: row.paper == "breaks" for row in ROWS}  # in the paper


def test_every_ablation_has_an_entry():
    assert sorted(p.stem for p in (CONFIGS / "ablations").glob("*.yaml")) == sorted(ABLATIONS)


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_an_ablation_is_the_proxy_with_one_change(name):
    proxy, ablation = load_config(CONFIGS / "proxy.yaml"), load_config(CONFIGS / "ablations" / f"{name}.yaml")
    assert [d.split(":")[0] for d in config_differences(proxy, ablation)] == ABLATIONS[name]
    assert bool(breaking_settings(ablation, results={})) == BROKE[name]
    assert ablation.model.n_layers == 12 and ablation.data.sources[0].source.startswith("hub:")  # from 10b.yaml


def test_the_proxy_differs_from_the_targets_only_where_transfer_allows():
    proxy = load_config(CONFIGS / "proxy.yaml")
    for target in ("10b.yaml", "1b.yaml"):
        assert config_differences(proxy, load_config(CONFIGS / target)) == []
    assert breaking_settings(proxy, results={}) == []


def test_sp_readout_init_under_mup():
    cfg = load_config(CONFIGS / "ablations" / "readout_sp.yaml", ["model.n_layers=1", "data.vocab_size=512"])
    model = build_model(cfg.model, 512, seed=0)
    assert model.readout.weight.std().item() == pytest.approx(128**-0.5, rel=0.05)
    assert cfg.model.parametrization == "mup"
