import subprocess
import sys

import pytest
import yaml

from pretrain.config import Config, SourceConfig, config_from_dict, load_config
from pretrain.errors import ConfigError
from pretrain.model import mup
from tests.helpers import ROOT


def test_defaults_and_derived_values():
    cfg = config_from_dict({"model": {"d_model": 512, "head_dim": 64, "n_kv_heads": 2}})
    assert cfg.model.n_heads == 8 and cfg.model.kv_heads == 2
    assert mup.width_multiplier(cfg.model) == 4.0
    assert cfg.model.ffn_dim == 1536  # a multiple of 256 near 8/3·512 = 1365
    assert config_from_dict({"model": {"d_model": 512, "mlp": "relu2"}}).model.ffn_dim == 2048


@pytest.mark.parametrize("raw, expected", [
    ({"model": {"d_modle": 1}}, "model.d_modle: unknown key (did you mean model.d_model?)"),
    ({"modle": {}}, "modle: unknown key (did you mean model?)"),
    ({"model": {"parametrization": "ntk"}}, "model.parametrization: 'ntk' is not allowed; choose one of: mup, sp"),
    ({"model": {"mlp": "gelu"}}, "choose one of: swiglu, relu, relu2"),
    ({"deepspeed": {"zero_stage": 4}}, "deepspeed.zero_stage: 4 is not allowed; choose one of: 0, 1, 2, 3"),
    ({"train": {"steps": "many"}}, "train.steps: expected an integer, got 'many'"),
    ({"optim": {"lr": "fast"}}, "optim.lr: expected a number"),
    ({"model": {"zero_query": "yes"}}, "model.zero_query: expected true or false"),
    ({"optim": {"lr": 10**400}}, "optim.lr: must be a finite number, got inf"),
    ({"train": {"steps": -(10**400)}}, "train.steps: must be > 0, got an integer of 1329 bits"),
    ({"train": {"seed": 2**64}}, "train.seed: must be a 64-bit integer (|n| < 2^63, what numpy and torch hold), "
                                 "got 18446744073709551616"),
    ({"train": {"steps": 1e300}}, "train.steps: must be a 64-bit integer"),
    ({"model": {"d_model": 2**24 + 1}}, "model.d_model: must lie in (0, 2^24], got 16777217"),
    ({"data": {"sources": [{"weight": 1e308}]}}, "data.sources[0].weight: must lie in [1e-15, 1e+15], got 1e+308"),
    ({"data": {"sources": [{"weight": float("nan")}]}}, "data.sources[0].weight: must be a finite number, got nan"),
    ({"train": {"steps": "9" * 5000}}, "train.steps: expected an integer, got '99999"),
    ({"train": {"steps": "9" * 5000}}, "… (5,002 characters)"),
    ({"model": {"d_model": 100, "head_dim": 64}}, "model.head_dim: must divide model.d_model=100"),
    ({"model": {"d_model": 256, "head_dim": 64, "n_kv_heads": 3}}, "model.n_kv_heads: must divide"),
])
def test_bad_config_names_the_key(raw, expected):
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  d_model: 256\n")
    cfg = load_config(path, ["model.d_model=512", "optim.lr=2^-6", "model.n_kv_heads=1", "wandb.tags=[a, b]"])
    assert cfg.model.d_model == 512 and cfg.optim.lr == 2**-6 and cfg.model.n_kv_heads == 1
    assert cfg.wandb.tags == ["a", "b"]
    with pytest.raises(ConfigError, match="not of the form key.sub=value"):
        load_config(path, ["model.d_model"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_yaml_merge_keys_and_dates(tmp_path):
    """`<<: *anchor` merges a mapping (its own keys win: no repeated key); a date is text, as in YAML 1.2."""
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  sources:\n    - &code {source: embedded, weight: 3, name: code}\n"
                    "    - <<: *code\n      weight: 1\n      name: more\nwandb:\n  name: 2024-01-01\n")
    cfg = load_config(path)
    assert [(s.source, s.weight, s.name) for s in cfg.data.sources] == [("embedded", 3, "code"),
                                                                        ("embedded", 1, "more")]
    assert cfg.wandb.name == "2024-01-01"


def test_resolved_config_round_trips():
    cfg = config_from_dict({"model": {"d_model": 384, "head_dim": 64}, "train": {"steps": 7}})
    import yaml

    assert config_from_dict(yaml.safe_load(cfg.to_yaml())) == cfg


def test_global_batch_derives_accumulation():
    cfg = config_from_dict({"train": {"micro_batch_size": 4, "global_batch_size": 32}})
    assert cfg.train.accumulation(world_size=1) == 8 and cfg.train.accumulation(world_size=2) == 4
    with pytest.raises(ConfigError, match="not a multiple"):
        cfg.train.accumulation(world_size=3)


@pytest.mark.parametrize("path", sorted((ROOT / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    assert isinstance(load_config(path), Config)


def test_cli_reports_a_typo_in_one_line():
    proc = subprocess.run([sys.executable, "-m", "pretrain", "inspect", str(ROOT / "configs/tiny.yaml"),
                           "model.d_modle=64"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: model.d_modle: unknown key (did you mean model.d_model?); allowed: " + ", ".join(
            f.name for f in __import__("dataclasses").fields(Config().model))]


def test_data_source_is_shorthand_for_a_single_source():
    """Everything downstream reads data.sources: the shorthand is moved there when the config is built, its key
    kept for messages, and the resolved config reloads as it was."""
    cfg = config_from_dict({"data": {"source": "corpus.jsonl", "text_field": "body"}})
    assert cfg.data.sources == [SourceConfig(source="corpus.jsonl", text_field="body")]
    assert cfg.data.source is None and cfg.data.text_field is None and cfg.data.sources[0].key == "data"
    mixture = config_from_dict({"data": {"sources": [{"source": "a.txt"}, {"source": "b.txt", "weight": 2}]}})
    assert [s.key for s in mixture.data.sources] == ["data.sources[0]", "data.sources[1]"]
    assert config_from_dict({}).data.sources == [SourceConfig()]
    assert config_from_dict(yaml.safe_load(cfg.to_yaml())).data.sources == cfg.data.sources


def test_a_base_configs_default_source_gives_way_to_an_override_mixture(tmp_path):
    (tmp_path / "base.yaml").write_text("data:\n  source: embedded\n")
    cfg = load_config(tmp_path / "base.yaml", ["data.sources=[{source: embedded, weight: 3}, {source: x.txt}]"])
    assert [s.weight for s in cfg.data.sources] == [3.0, 1.0]
    with pytest.raises(ConfigError, match="set either data.source"):
        load_config(tmp_path / "base.yaml", ["data.source=y.txt", "data.sources=[{source: x.txt}]"])
