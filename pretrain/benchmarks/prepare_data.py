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
The recipe is not charged for reading the corpus; ours is. Each side runs `--repeats` times, interleaved, and
the best time counts (the machine may be shared). Both must produce the same rows, or the benchmark fails.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from itertools import chain

import datasets
import numpy as np

from ..config import DataConfig, load_config
from ..corpus import load_corpus
from ..data import SPLITS, hf_tokenizer, prepare_data, prepare_tokenizer, split_documents


def run_ours(cfg: DataConfig) -> tuple[float, dict[str, np.ndarray]]:
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        data = prepare_data(replace(cfg, cache_dir=cache), progress=False)
        seconds = time.perf_counter() - start
        return seconds, {"train": np.array(data.train), "val": np.array(data.val)}


def run_recipe(cfg: DataConfig, documents: dict[str, list[str]]) -> tuple[float, dict[str, np.ndarray]]:
    tokenizer = hf_tokenizer(cfg.tokenizer)
    eos, block_size = tokenizer.eos_token_id, cfg.seq_len + 1

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

    start = time.perf_counter()
    raw = datasets.DatasetDict({name: datasets.Dataset.from_dict({"text": texts})
                                for name, texts in documents.items()})
    tokenized = raw.map(tokenize_function, batched=True, remove_columns=["text"])
    packed = tokenized.map(group_texts, batched=True, batch_size=None)
    seconds = time.perf_counter() - start
    return seconds, {name: np.array(packed[name].with_format("numpy")["input_ids"]) for name in SPLITS}


def split_texts(cfg: DataConfig) -> dict[str, list[str]]:
    """Our train and val documents, in corpus order: the recipe's input."""
    corpus = load_corpus(cfg)
    codes = split_documents(corpus, cfg.val_fraction)
    texts = [text for batch in corpus.batches(1024) for text in batch]
    return {name: [t for t, c in zip(texts, codes) if c == code] for name, code in SPLITS.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/tiny.yaml", help="YAML config; its data section is used")
    parser.add_argument("--max-documents", type=int, default=None, help="cap the corpus")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each side; the best counts")
    args = parser.parse_args(argv)

    cfg = load_config(args.config).data if os.path.exists(args.config) else DataConfig()
    if args.max_documents is not None:
        cfg = replace(cfg, max_documents=args.max_documents)
    cfg = replace(cfg, tokenizer=str(prepare_tokenizer(cfg)))
    documents = split_texts(cfg)
    datasets.disable_progress_bars()

    times: dict[str, list[float]] = {"ours": [], "recipe": []}
    for _ in range(args.repeats):
        seconds, ours = run_ours(cfg)
        times["ours"].append(seconds)
        seconds, recipe = run_recipe(cfg, documents)
        times["recipe"].append(seconds)
        for name in SPLITS:
            if not np.array_equal(ours[name], recipe[name]):
                raise SystemExit(f"the {name} rows differ: ours {ours[name].shape}, "
                                 f"recipe {recipe[name].shape}")

    docs = sum(map(len, documents.values()))
    tokens = sum(rows.size for rows in ours.values())
    print(f"corpus: {load_corpus(cfg).description}, {docs:,} documents")
    print(f"tokenizer: {cfg.tokenizer}; seq_len {cfg.seq_len}; {os.cpu_count()} CPU cores")
    print(f"best of {args.repeats} runs each; all runs: ours {_seconds(times['ours'])}, "
          f"recipe {_seconds(times['recipe'])}")
    print(f"{'':24}{'docs':>8}{'tokens':>12}{'seconds':>10}{'tokens/s':>12}")
    for label, key in (("ours (prepare_data)", "ours"), ("HF run_clm.py recipe", "recipe")):
        best = min(times[key])
        print(f"{label:24}{docs:>8,}{tokens:>12,}{best:>10.2f}{tokens / best:>12,.0f}")
    print(f"speed-up: {min(times['recipe']) / min(times['ours']):.2f}x; packed rows identical: yes")


def _seconds(values: list[float]) -> str:
    return "/".join(f"{v:.2f}" for v in values) + " s"


if __name__ == "__main__":
    main()
