"""The paper's ablation table (Lingle 2024, "A Large-Scale Exploration of μ-Transfer", widths 128/512/2048) as rows
to measure on our own stack, and what our table measured for each.

A row is the baseline μP recipe with one change of the paper's: the settings of an ablation config
(configs/ablations/NAME.yaml, as they differ from configs/proxy.yaml, width aside), full SP, or a 4x larger or
smaller batch at equal tokens. `scripts/paper_table.sh` sweeps every row over the same widths on a CPU proxy and
writes docs/paper_table.md and RESULTS, this package's `paper_table.json`: per row its settings, the optimum per
width, the drift per doubling of width with its interval, our verdict and the paper's. `apply-lr` reads RESULTS
(`measured_note`, `measured_breaks`) to say, beside the paper's verdict on a setting, what our table measured for
it; a row we have not measured yet is said to be so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from ..bundled import bundled_config
from ..config import Config, load_config
from ..errors import ConfigError
from ..fileio import read_json_object

RESULTS = Path(str(files("pretrain.transfer"))) / "paper_table.json"
# Our verdict, from the width drift's (`report.verdict`), in the paper's words.
VERDICTS = {"transfers": "holds", "drifts": "breaks", "undetermined": "undetermined"}
PAPER_WIDEST = 2048  # the paper's widths are 128, 512 and 2048


@dataclass(frozen=True)
class Row:
    name: str  # an ablation config's name where the row is one
    change: str  # in words, as the table shows it
    paper: str | None  # "holds" or "breaks"; None where the paper ran no such row
    paper_optima: str = ""  # the paper's optimum LRs across its widths, where reported
    ablation: bool = True  # its settings are configs/ablations/NAME.yaml's
    settings: tuple[str, ...] = ()  # else these (`key=value`); the batch rows change the sweep instead
    note: str = ""  # what the change does to width scaling, where that bears on a verdict


ROWS = (
    Row("baseline", "baseline μP (SwiGLU, zero-init query, 1/D attention, no gains, no biases)", "holds",
        "2^-6 at every width", ablation=False),
    Row("bias", "biases on every projection", "holds", "2^-6 at every width"),
    Row("norm_gains", "trainable RMSNorm gains, a vector", "breaks", "2^-4 at 128 and 512, 2^-8 at 2048"),
    Row("norm_gains_scalar", "trainable RMSNorm gains, a scalar", "breaks"),
    Row("zero_query_off", "query initialized like the keys instead of zero", "holds"),
    Row("qk_scale_sp", "attention scale 1/√D instead of 1/D", "breaks", "2^-8 at 128, 2^-6 above",
        note="With heads of a fixed size D (16 here, 128 in the paper) 1/√D is 1/D times the same √D at every width, "
             "so by itself it scales every width's attention logits alike; the paper's optimum moved once, from "
             "2^-8 at width 128 to 2^-6 at 512, and stayed there at 2048."),
    Row("readout_sp", "SP readout init (std d^-1/2)", "holds"),
    Row("sp", "full standard parametrization", "breaks", "2^-6 at 128, 2^-8 at 512, 2^-10 at 2048", ablation=False,
        settings=("model.parametrization=sp",)),
    Row("mlp_relu2", "squared-ReLU MLP", "holds"),
    Row("mlp_relu", "ReLU MLP", None),
    Row("mqa", "multi-query attention", "holds"),
    Row("gqa", "grouped-query attention, 2 KV heads", None),
    Row("batch_x4", "4x larger batch, equal tokens", "holds", ablation=False),
    Row("batch_div4", "4x smaller batch, equal tokens", "holds", ablation=False),
    Row("schedule_cosine", "cosine LR decay", "holds"),
    Row("weight_decay_coupled", "LR-coupled weight decay 0.1", "breaks", "2^-8 at 128, 2^-6 above"),
    Row("lion", "Lion optimizer", "breaks", "2^-10 at 128, 2^-8 above"),
)


def row_settings(row: Row) -> list[str]:
    """The row's change as `key=value` overrides: its own settings, or those where its ablation config differs from
    configs/proxy.yaml, d_model aside (an ablation may start its sweep at another width)."""
    if not row.ablation:
        return list(row.settings)
    proxy, ablation = (load_config(bundled_config(name)).to_dict() for name in ("proxy", f"ablations/{row.name}"))
    return [f"{section}.{key}={_text(value)}" for section, values in ablation.items() for key, value in values.items()
            if value != proxy[section][key] and f"{section}.{key}" != "model.d_model"]


def _text(value: object) -> str:
    """A value as an override spells it: `true`, `0.1`, `scalar`."""
    return value if isinstance(value, str) else json.dumps(value)


def load_results(path: Path = RESULTS) -> dict:
    """The measured table, {} before one is written."""
    if not path.exists():
        return {}
    return read_json_object(path, ConfigError, "; it is written by scripts/paper_table.sh")


def drift_text(row: dict) -> str:
    """A measured row's drift, `a drift of -0.60 log2 per width doubling (80% interval [-0.80, -0.40])`, or why it
    has none."""
    if row["drift"] is None:
        return "no drift (fewer than two widths with an optimum inside the LR grid)"
    interval = row["drift_interval"]
    spread = (f"no interval at {interval['dof']} dof" if interval["low"] is None else
              f"{interval['confidence']:.0%} interval [{interval['low']:+.2f}, {interval['high']:+.2f}]")
    return f"a drift of {row['drift']:+.2f} log2 per width doubling ({spread})"


def measured_note(setting: str, results: dict) -> str:
    """What our table measured for the rows whose change includes `setting`, as a clause; or that it has not yet."""
    rows = [r for r in results.get("rows", []) if setting in r["settings"] and r["verdict"] is not None]
    if not rows:
        return "not measured on our stack yet (scripts/paper_table.sh writes docs/paper_table.md)"
    return "; ".join(f"our table (docs/paper_table.md, {results['scope']}) measured {drift_text(r)}: "
                     f"{VERDICTS[r['verdict']]} there{_kept(r, results)}" for r in rows)


def _kept(row: dict, results: dict) -> str:
    """Why a rule of the paper's stands where our table measured the setting holding: the paper's widths reach
    PAPER_WIDEST, past our table's."""
    if row["verdict"] != "transfers" or row.get("paper") != "breaks":
        return ""
    return (f"; the refusal stands on the paper's runs, which reach width {PAPER_WIDEST}, "
            f"{PAPER_WIDEST // max(results['widths'])}x our widest")


def measured_breaks(cfg: Config, results: dict) -> list[tuple[list[str], str]]:
    """(settings, note) of each row our table measured breaking transfer (the drift's interval wholly outside the
    tolerance) whose settings `cfg` has: rules from our own measurement, beside the paper's."""
    return [(row["settings"], measured_note(row["settings"][0], {**results, "rows": [row]}))
            for row in results.get("rows", []) if row["verdict"] == "drifts" and row["settings"]
            and all(_holds(cfg, setting) for setting in row["settings"])]


def _holds(cfg: Config, setting: str) -> bool:
    """Whether `cfg` has `setting` (`section.key=value`)."""
    key, value = setting.split("=", 1)
    section, name = key.split(".", 1)
    return _text(cfg.to_dict()[section].get(name)) == value
