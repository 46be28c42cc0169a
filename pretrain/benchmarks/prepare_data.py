"""`prepare-data` throughput against the Hugging Face `run_clm.py` preprocessing recipe, side by side.

    python -m pretrain.benchmarks.prepare_data [--config configs/tiny.yaml] [--max-documents N] [--repeats 3]

Both sides get the same documents and the same tokenizer.json, trained (or found in data.cache_dir) before any
timing starts.
- ours: `prepare_data` run cold into a fresh temporary cache: read the corpus, split it, encode, pack, write
  the shards and the metadata.
- recipe: run_clm.py's steps on our train and val documents, from an in-memory `datasets.Dataset`:
  `map` of a batched tokenize function calling `PreTrainedTokenizerFast` (EOS appended to each document,
  as ours does), then `map` of `group_texts` with block_size = seq_len + 1. group_texts sees each split as one
  batch, so it packs one stream as ours does (run_clm's 1000-document batches each drop a partial row;
  under 1000 documents per split, as on the embedded corpus, that is the same thing).
The recipe is not charged for reading the corpus nor for loading its tokenizer; ours is. Each side runs
`--repeats` times, interleaved, each run in a fresh process; the best time counts (the machine may be shared).
Both must produce the same rows, or the benchmark fails. Last, the encoders alone (`tokenizers` and the
tiktoken twin that prepare_data uses when there is one) encode all documents, to show where the time goes.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from itertools import chain
from typing import TYPE_CHECKING

import datasets
import numpy as np
from tokenizers import Tokenizer

from ..bundled import config_path
from ..config import DataConfig, load_config
from ..data.encoder import tiktoken_twin, usable_cores
from ..data.prepared import prepare_data
from ..data.sources import SPLITS, plan_sources, source_documents, split_of
from ..data.tokenizer import hf_tokenizer, prepare_tokenizer
from . import in_fresh_process, measure

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast


def recipe(tokenizer: PreTrainedTokenizerFast, block_size: int,
           documents: dict[str, list[str]]) -> datasets.DatasetDict:
    """run_clm.py's preprocessing: tokenize with `datasets.map`, then pack with `group_texts`."""
    eos = tokenizer.eos_token_id

    def tokenize_function(examples):
        output = tokenizer(examples["text"])
        return {"input_ids": [ids + [eos] for ids in output["input_ids"]],
                "attention_mask": [mask + [1] for mask in output["attention_mask"]]}

    def group_texts(examples):
        concatenated = {k: list(chain(*examples[k])) for k in examples}
        total_length = len(concatenated["input_ids"]) // block_size * block_size
        result = {k: [t[i:i + block_size] for i in range(0, total_length, block_size)]
                  for k, t in concatenated.items()}
        result["labels"] = result["input_ids"].copy()
        return result

    raw = datasets.DatasetDict({name: datasets.Dataset.from_dict({"text": texts})
                                for name, texts in documents.items()})
    tokenized = raw.map(tokenize_function, batched=True, remove_columns=["text"])
    return tokenized.map(group_texts, batched=True, batch_size=None)


Run = tuple[float, float, dict[str, np.ndarray]]  # wall seconds, CPU seconds, the packed rows per split


def run_ours(cfg: DataConfig) -> Run:
    with tempfile.TemporaryDirectory() as cache:
        wall, cpu, data = measure(lambda: prepare_data(replace(cfg, cache_dir=cache), progress=False))
        return wall, cpu, {name: getattr(data.sources[0], name).to_numpy() for name in SPLITS}


def run_recipe(cfg: DataConfig, documents: dict[str, list[str]]) -> Run:
    datasets.disable_progress_bars()
    tokenizer = hf_tokenizer(cfg.tokenizer)  # set-up, as in run_clm.py: not timed (it imports transformers)
    wall, cpu, packed = measure(lambda: recipe(tokenizer, cfg.seq_len + 1, documents))
    return wall, cpu, {name: np.array(packed[name].with_format("numpy")["input_ids"]) for name in SPLITS}


def run_encoders(tokenizer_path: str, texts: list[str]) -> dict[str, float]:
    """Seconds to encode `texts` alone, on all cores, by `tokenizers` and by its tiktoken twin."""
    tokenizer = Tokenizer.from_file(tokenizer_path)
    twin = tiktoken_twin(tokenizer)
    threads = usable_cores()
    seconds = {"tokenizers": measure(lambda: tokenizer.encode_batch_fast(texts))[0]}
    if twin is not None:
        seconds["tiktoken"] = measure(lambda: twin.encode_batch(texts, num_threads=threads, allowed_special="all"))[0]
    return seconds


def split_texts(cfg: DataConfig) -> dict[str, list[str]]:
    """Our train and val documents, in corpus order: the recipe's input."""
    texts = list(source_documents(plan_sources(cfg)[0]))
    codes = [split_of(text, cfg.val_fraction) for text in texts]
    return {name: [t for t, c in zip(texts, codes) if c == code] for name, code in SPLITS.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny", help="YAML config or bundled config name; its data section is "
                                                         "used")
    parser.add_argument("--max-documents", type=int, default=None, help="cap the corpus")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side; the best counts")
    args = parser.parse_args(argv)

    cfg = load_config(config_path(args.config)).data
    if args.max_documents is not None:
        cfg = replace(cfg, max_documents=args.max_documents)
    cfg = replace(cfg, tokenizer=str(prepare_tokenizer(cfg, plan_sources(cfg))))
    documents = split_texts(cfg)

    times: dict[str, list[tuple[float, float]]] = {"ours": [], "recipe": []}  # (wall, cpu) per run
    for _ in range(args.repeats):
        wall, cpu, ours = in_fresh_process(run_ours, cfg)
        times["ours"].append((wall, cpu))
        wall, cpu, theirs = in_fresh_process(run_recipe, cfg, documents)
        times["recipe"].append((wall, cpu))
        for name in SPLITS:
            if not np.array_equal(ours[name], theirs[name]):
                raise SystemExit(f"the {name} rows differ: ours {ours[name].shape}, "
                                 f"recipe {theirs[name].shape}")

    texts = [text for split in documents.values() for text in split]
    encoders: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for name, seconds in in_fresh_process(run_encoders, cfg.tokenizer, texts).items():
            encoders.setdefault(name, []).append(seconds)

    docs = sum(map(len, documents.values()))
    tokens = sum(rows.size for rows in ours.values())
    best = {side: min(runs) for side, runs in times.items()}
    print(f"corpus: {plan_sources(cfg)[0].source.description}, {docs:,} documents")
    print(f"tokenizer: {cfg.tokenizer}; seq_len {cfg.seq_len}; {usable_cores()} CPU cores; "
          f"best of {args.repeats} runs each")
    for side, runs in times.items():
        print(f"  {side} runs (wall s / CPU s): " + ", ".join(f"{w:.2f}/{c:.2f}" for w, c in runs))
    print(f"{'':24}{'docs':>8}{'tokens':>12}{'seconds':>10}{'tokens/s':>12}{'CPU s':>8}")
    for label, side in (("ours (prepare_data)", "ours"), ("HF run_clm.py recipe", "recipe")):
        wall, cpu = best[side]
        print(f"{label:24}{docs:>8,}{tokens:>12,}{wall:>10.2f}{tokens / wall:>12,.0f}{cpu:>8.2f}")
    print(f"speed-up: {best['recipe'][0] / best['ours'][0]:.2f}x wall-clock "
          f"({min(c for _, c in times['recipe']) / min(c for _, c in times['ours']):.2f}x in CPU time); "
          "packed rows identical: yes")
    print(f"encoding alone, all documents on {usable_cores()} cores (best of {args.repeats}): "
          + ", ".join(f"{name} {min(runs):.2f} s" for name, runs in encoders.items()))


if __name__ == "__main__":
    main()
