"""What checking prepared data costs at open: the default check (each shard's size and sampled digest) against
the full SHA-256 of every shard (`pretrain prepare-data --verify`, the Slurm finalize step).

    python -m pretrain.benchmarks.verify_cost [--tokens 3e8] [--repeats 3] [--dir /tmp/x]

Prepares a JSON-lines corpus of about `--tokens` tokens (marked copies of the embedded corpus, as
prepare_scale builds it; seq_len 2048, the 4096-token BPE of configs/tiny.yaml), then opens it `--repeats`
times each way, alternating. The page cache is warm after the first open (the files were just written): the
full digest's figure is then the hashing rate, and on a cold disk it is bounded by the disk's read rate too.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

from ..config import load_config
from ..data.layout import read_manifest
from ..data.prepared import open_prepared
from . import CONFIGS, measure
from .prepare_scale import TOKENS_PER_BYTE, build_corpus, prepare_overrides, tiny_tokenizer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=float, default=3e8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None, help="working directory (default: a temporary one)")
    args = parser.parse_args(argv)
    root = Path(args.dir or tempfile.mkdtemp(prefix="verify-cost-"))
    corpus, cache = root / "corpus", root / "cache"
    if not corpus.is_dir():
        build_corpus(corpus, args.tokens, TOKENS_PER_BYTE)
    overrides = prepare_overrides(corpus, cache, tiny_tokenizer())
    subprocess.run([sys.executable, "-m", "pretrain", "prepare-data", str(CONFIGS / "tiny.yaml"), *overrides,
                    "--workers", "2"], check=True, stdout=subprocess.DEVNULL)
    cfg = load_config(CONFIGS / "tiny.yaml", overrides).data
    (target,) = [p for p in cache.iterdir() if p.is_dir() and p.name.startswith("json-")]
    manifest = read_manifest(target)
    size = sum(shard.bytes for shard in manifest.shards)
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for verify in (False, True):
            times[verify].append(measure(partial(open_prepared, cfg, [target], verify))[0])
    fast, full = min(times[False]), min(times[True])
    print(f"{manifest.train_tokens + manifest.val_tokens:,} tokens in {len(manifest.shards)} shards, "
          f"{size / 2**30:.2f} GiB; warm page cache; best of {args.repeats}:")
    print(f"  open, sampled digests        {fast:8.3f} s   ({', '.join(f'{t:.3f}' for t in times[False])})")
    print(f"  open, full SHA-256 (verify)  {full:8.3f} s   ({', '.join(f'{t:.3f}' for t in times[True])})  "
          f"{size / 2**30 / full:.2f} GiB/s")
    print(f"  full / sampled               {full / fast:8.1f}x")


if __name__ == "__main__":
    main()
