"""Data preparation at scale: throughput with 1 and 2 worker processes, and peak memory at two corpus sizes.

    python -m pretrain.benchmarks.prepare_scale [--tokens 1e9] [--small 1e8] [--dir /tmp/x]

Builds a local corpus of JSON-lines files from copies of the embedded corpus (the Python standard library's
sources, each copy's documents marked with its number, so that no two documents are equal), about `--tokens`
tokens with the 4096-token BPE of configs/tiny.yaml, then runs `pretrain prepare-data` on it cold, in a fresh
process, with `--workers 1` and `--workers 2`, and on a `--small` corpus with 1 worker. For each run: tokens,
seconds, tokens/s, tokens/s per core, and the peak resident memory of the whole process tree (sampled every
0.2 s). The tokenizer is trained beforehand and passed as a file, so the runs time preparation only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from ..config import DataConfig, load_config
from ..data.encoder import usable_cores
from ..data.layout import read_manifest
from ..data.sources import plan_sources, source_documents
from ..data.tokenizer import prepare_tokenizer
from . import CONFIGS, resident_bytes

BYTES_PER_FILE = 256 << 20
TOKENS_PER_BYTE = 3_481_579 / 12_200_000  # the embedded corpus at the 4096-token BPE: ~3.5 bytes per token


def build_corpus(folder: Path, tokens: float, tokens_per_byte: float) -> int:
    """JSON-lines files of marked copies of the embedded corpus, about `tokens` tokens; returns bytes written."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = list(source_documents(plan_sources(DataConfig())[0]))
    written, copy, part, out = 0, 0, 0, None
    while written * tokens_per_byte < tokens:
        for text in texts:
            if out is None or out.tell() >= BYTES_PER_FILE:
                if out:
                    out.close()
                out = open(folder / f"part-{part:04d}.jsonl", "w", encoding="utf-8")
                part += 1
            line = json.dumps({"text": f"# copy {copy}\n{text}"}) + "\n"
            out.write(line)
            written += len(line.encode())
        copy += 1
    out.close()
    return written


def peak_tree_rss(pid: int, stop: threading.Event, peak: list[int]) -> None:
    """Sum of the resident memory of `pid` and its descendants, sampled until `stop`; the largest into peak."""
    while not stop.is_set():
        total = 0
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                stat = (proc / "stat").read_text().split()
                if int(proc.name) == pid or _descends(int(stat[3]), pid):
                    total += resident_bytes(proc.name)
            except (OSError, IndexError, ValueError):
                continue
        peak[0] = max(peak[0], total)
        stop.wait(0.2)


def _descends(parent: int, ancestor: int) -> bool:
    while parent > 1:
        if parent == ancestor:
            return True
        try:
            parent = int(Path(f"/proc/{parent}/stat").read_text().split()[3])
        except (OSError, IndexError, ValueError):
            return False
    return False


def tiny_tokenizer() -> Path:
    """The 4096-token BPE of configs/tiny.yaml as a file (trained once on the embedded corpus, then cached)."""
    cfg = load_config(CONFIGS / "tiny.yaml").data
    return prepare_tokenizer(cfg, plan_sources(cfg), progress=False)


def prepare_overrides(corpus: Path, cache: Path, tokenizer: Path) -> list[str]:
    """configs/tiny.yaml's overrides that prepare `corpus` with `tokenizer` into `cache`, at seq_len 2048."""
    return [f"data.source={corpus}", f"data.tokenizer={tokenizer}", f"data.cache_dir={cache}", "data.seq_len=2048"]


def run(corpus: Path, cache: Path, tokenizer: Path, workers: int) -> dict:
    command = [sys.executable, "-m", "pretrain", "prepare-data", str(CONFIGS / "tiny.yaml"),
               *prepare_overrides(corpus, cache, tokenizer), "--workers", str(workers)]
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    stop, peak = threading.Event(), [0]
    sampler = threading.Thread(target=peak_tree_rss, args=(proc.pid, stop, peak))
    sampler.start()
    out, _ = proc.communicate()
    seconds = time.perf_counter() - started
    stop.set()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"prepare-data failed ({proc.returncode})")
    (target,) = [p for p in cache.iterdir() if p.is_dir() and p.name.startswith("json-")]
    manifest = read_manifest(target)
    return {"workers": workers, "tokens": manifest.train_tokens + manifest.val_tokens,
            "documents": manifest.documents, "seconds": seconds, "peak_rss": peak[0],
            "slices": len(manifest.slices), "shards": len(manifest.shards)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=float, default=1e9)
    parser.add_argument("--small", type=float, default=1e8)
    parser.add_argument("--dir", default=None, help="working directory (default: a temporary one)")
    args = parser.parse_args(argv)
    root = Path(args.dir or tempfile.mkdtemp(prefix="prepare-scale-"))
    tokenizer = tiny_tokenizer()
    sizes = {"large": args.tokens, "small": args.small}
    corpora = {name: root / f"corpus-{name}" for name in sizes}
    for name, tokens in sizes.items():
        if not corpora[name].is_dir():
            written = build_corpus(corpora[name], tokens, TOKENS_PER_BYTE)
            print(f"corpus {name}: {written / 2**30:.2f} GiB of JSON lines in {corpora[name]}", flush=True)
    results = []
    for corpus, workers in (("small", 1), ("large", 1), ("large", 2)):
        cache = root / f"cache-{corpus}-{workers}"
        result = run(corpora[corpus], cache, tokenizer, workers)
        subprocess.run(["rm", "-rf", str(cache)], check=True)
        results.append({"corpus": corpus, **result})
        print(json.dumps(results[-1]), flush=True)
    cores = usable_cores()
    print(f"\n{cores} cores; JSON-lines corpus, 4096-token BPE (tiktoken twin), seq_len 2048, cold cache")
    print(f"{'corpus':<8}{'workers':>8}{'tokens':>15}{'slices':>8}{'shards':>8}{'seconds':>9}{'tokens/s':>12}"
          f"{'per core':>11}{'peak RSS':>10}")
    for r in results:
        rate = r["tokens"] / r["seconds"]
        print(f"{r['corpus']:<8}{r['workers']:>8}{r['tokens']:>15,}{r['slices']:>8}{r['shards']:>8}"
              f"{r['seconds']:>9.1f}{rate:>12,.0f}{rate / cores:>11,.0f}{r['peak_rss'] / 2**30:>9.2f}G")


if __name__ == "__main__":
    main()
