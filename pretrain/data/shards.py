"""Preparing data: each source's documents split, encoded and packed into token shards, listed in a manifest
(the files and their names: see `layout`).

Preparation works slice by slice (see `sources`): a slice's documents are split by hash, encoded (by tiktoken
where it is an exact twin of the tokenizer, see `encoder`), each followed by EOS (a tokenizer's own template,
such as a BOS, is kept), concatenated per split and cut into rows of seq_len + 1 tokens (inputs row[:-1],
targets row[1:]); the tail that does not fill a row is dropped. Rows go to raw uint16 (uint32 past 2^16 ids)
shard files of at most SHARD_TOKENS tokens. Each slice is published whole into the source's work directory
(`layout.slice_dir`), so that any number of processes or Slurm array tasks can prepare slices in any order and
a rerun skips finished ones; `finalize` checks that every slice is there, writes the manifest and
publishes the directory. The rows depend only on the input and the settings, never on the number of workers.
A hub source is read at one commit, resolved by the first planner and recorded in the work directory (a
`layout.Revision`): every task, rerun and finalize lists its files at that commit, however the dataset's branch
moves meanwhile, and the manifest keeps it.

`pretrain train` prepares small sources itself (the embedded corpus, small local files: at most
IN_BAND_TOKENS tokens, seconds of work); a larger or hub source must be prepared first, with
`pretrain prepare-data` (`--workers N`, or `--slurm`), so that no rank of a training job ever waits hours at a
collective while one rank tokenizes.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from itertools import chain, islice
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from ..config import DataConfig
from ..errors import ConfigError, DataError
from ..fileio import atomic_output, checksum, remove
from ..progress import progress_bar
from .encoder import DocumentEncoder, document_encoder, usable_cores
from .layout import (
    SHARDS,
    TOKENIZER,
    UNIGRAM,
    Manifest,
    Revision,
    Shard,
    SliceCounts,
    SliceStats,
    data_dir,
    entropy,
    locked,
    read_revision,
    read_slice_stats,
    revision_path,
    sample_digest,
    shard_name,
    slice_dir,
    token_dtype,
    work_dir,
    write_manifest,
    write_revision,
    write_slice_stats,
)
from .sources import SKIP, SPLITS, TRAIN, VAL, BadRecords, HubSource, SourcePlan, documents, plan_sources, split_of
from .tokenizer import id_count, load_tokenizer, prepare_tokenizer, tokenizer_path

SHARD_TOKENS = 2**28  # a shard file holds at most this many tokens (512 MiB as uint16)
IN_BAND_TOKENS = 50_000_000  # the most `pretrain train` prepares itself
BYTES_PER_TOKEN = 3  # for the in-band estimate: BPE tokens of text and code run 3-5 bytes; 3 errs on the safe side
DOCS_PER_BATCH = 128  # documents per encode call


@dataclass(frozen=True)
class Work:
    """What preparing the data of a config takes: the sources, the tokenizer, and where each source goes."""

    cfg: DataConfig
    plans: tuple[SourcePlan, ...]
    tokenizer: Path
    targets: tuple[Path, ...]

    def pieces(self) -> list[tuple[int, int]]:
        """(source, slice) of every slice to prepare, in a fixed order."""
        return [(s, piece.index) for s, plan in enumerate(self.plans) if not self.targets[s].is_dir()
                for piece in plan.source.slices]  # a prepared source is not listed (a hub one: no network)


def plan_work(cfg: DataConfig, progress: bool = True, in_band: bool = False) -> Work:
    """Resolve the sources and prepare the tokenizer (which every slice needs). `in_band` (inside `pretrain
    train`): refuse to train a tokenizer on, or prepare, a source too large for that."""
    cfg.validate()
    plans = plan_sources(cfg)
    if in_band and not tokenizer_path(cfg, plans).is_file():
        for plan in plans:
            check_in_band(plan, cfg)
    tokenizer = prepare_tokenizer(cfg, plans, progress)
    targets = tuple(data_dir(cfg, plan.source, tokenizer) for plan in plans)
    if in_band:
        for plan, target in zip(plans, targets):
            if not target.is_dir():
                check_in_band(plan, cfg)
    return Work(cfg, tuple(_pinned(plan, target) for plan, target in zip(plans, targets)), tokenizer, targets)


def prepare(cfg: DataConfig, progress: bool = True, in_band: bool = False, workers: int = 1) -> tuple[Path, ...]:
    """The directories of `cfg`'s prepared sources, in its order: built where missing (by `workers` processes),
    reused after that."""
    work = plan_work(cfg, progress, in_band)
    if work.pieces():
        # One builder at a time: another (a second job on the same data, a sweep's points) waits, saying for
        # whom, then finds the result; refusing would fail jobs that can use it. The array tasks of
        # `prepare-data --slurm` call prepare_slices without it: each publishes only its own slices.
        with locked(work.targets[0]):
            prepare_slices(work, workers=workers, progress=progress)
            finalize(work)
    return work.targets


def check_in_band(plan: SourcePlan, cfg: DataConfig) -> None:
    """Refuse to prepare, inside a training job, a source that would take more than seconds."""
    source = plan.source
    if source.kind == "hub":
        raise ConfigError(f"{source.setting}: {source.description} must be prepared before training: run "
                          "`pretrain prepare-data CONFIG` (or with --slurm on a cluster), then train")
    tokens = source.input_bytes / BYTES_PER_TOKEN
    if cfg.max_tokens is not None:
        tokens = min(tokens, cfg.max_tokens)
    if tokens > IN_BAND_TOKENS:
        raise ConfigError(f"{source.setting}: {source.description} is about {tokens:.2g} tokens, more than the "
                          f"{IN_BAND_TOKENS:.2g} that training prepares itself: run `pretrain prepare-data CONFIG "
                          "--workers N` (or --slurm on a cluster) first")


def _pinned(plan: SourcePlan, target: Path) -> SourcePlan:
    """`plan` with its hub source read at the commit recorded in the work directory of `target`: the first planner
    resolves the commit and records it there, later ones (array tasks, reruns, finalize) read it. Any other
    source, or one already prepared, is left as it is."""
    if not isinstance(plan.source, HubSource) or target.is_dir():
        return plan
    if not revision_path(target).is_file():
        with locked(target):  # planners racing to record: the first one's commit holds
            if not revision_path(target).is_file():
                write_revision(target, Revision(source=plan.source.description, revision=plan.source.revision))
    return SourcePlan(plan.source.at(read_revision(target).revision), plan.weight, plan.max_documents)


# --- preparing slices ----------------------------------------------------------------------------------------

def prepare_slices(work: Work, task: int = 0, tasks: int = 1, workers: int = 1, progress: bool = True) -> int:
    """Prepare this task's share of the unfinished slices (every `tasks`-th, from `task`), with `workers`
    processes; returns how many were prepared."""
    todo = [(s, i) for n, (s, i) in enumerate(work.pieces()) if n % tasks == task
            and not slice_dir(work.targets[s], i).is_dir()]
    bar = progress_bar(total=len(todo), unit="slice", desc="prepare", disable=not progress or len(todo) < 2)
    if workers > 1 and len(todo) > 1:
        threads = max(1, usable_cores() // workers)
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(_prepare_slice_quietly, [(work, s, i, threads) for s, i in todo]):
                bar.update(1)
    else:
        for s, i in todo:
            prepare_slice(work, s, i, work.cfg.num_workers or usable_cores(), progress)
            bar.update(1)
    bar.close()
    return len(todo)


def _prepare_slice_quietly(args: tuple) -> None:
    work, source, index, threads = args
    prepare_slice(work, source, index, threads, progress=False)


def prepare_slice(work: Work, source: int, index: int, threads: int, progress: bool = True) -> None:
    """Encode and pack one slice into its work directory, published whole (a crash leaves nothing there)."""
    plan, target, cfg = work.plans[source], work.targets[source], work.cfg
    piece, limit = plan.source.slices[index], plan.limits[index]
    tokenizer, eos, encoder = _slice_encoder(work.tokenizer, cfg.vocab_size, threads)
    n_ids = id_count(tokenizer)
    dtype = token_dtype(n_ids)
    bad = BadRecords() if cfg.skip_bad_records else None
    counts = {TRAIN: 0, VAL: 0}
    with atomic_output(slice_dir(target, index), directory=True) as staged:
        writers = {code: _RowWriter(staged, name, index, cfg.seq_len + 1, dtype, n_ids)
                   for name, code in SPLITS.items()}
        texts = documents(plan.source, piece, limit, bad)
        desc = f"{plan.source.name} slice {index + 1}/{len(plan.source.slices)} ({encoder.name})"
        with progress_bar(unit="doc", desc=desc, disable=not progress, leave=False) as bar:
            for codes, ids in _encoded(encoder, texts, cfg.val_fraction):
                for code, writer in writers.items():
                    chosen = [d for d, c in zip(ids, codes) if c == code]
                    counts[code] += len(chosen)
                    if chosen:
                        writer.write(_join(chosen, eos, dtype))
                bar.update(len(codes))
        write_slice_stats(staged, SliceStats(
            slice=index, input=piece.label, encoder=encoder.name, dtype=dtype.name, vocab_size=n_ids, eos_id=eos,
            train_documents=counts[TRAIN], val_documents=counts[VAL], skipped_records=bad.count if bad else 0,
            first_skipped=bad.first if bad else None,
            shards=[shard for writer in writers.values() for shard in writer.close()]))
        np.save(staged / UNIGRAM, writers[TRAIN].unigram)


@functools.lru_cache(maxsize=1)
def _slice_encoder(path: Path, vocab_size: int, threads: int) -> tuple[Tokenizer, int, DocumentEncoder]:
    """The tokenizer at `path`, its EOS id and its document encoder, built once per process for every slice it
    prepares (finding the tiktoken twin reads the whole vocabulary)."""
    os.environ.setdefault("RAYON_NUM_THREADS", str(threads))  # the Rust encoder sizes its pool at its first use
    tokenizer, eos = load_tokenizer(path, vocab_size)
    return tokenizer, eos, document_encoder(tokenizer, threads)


class _RowWriter:
    """Cuts a stream of tokens into rows and writes them to shard files of at most SHARD_TOKENS tokens; the
    tail that does not fill a row is dropped at the end."""

    def __init__(self, folder: Path, split: str, index: int, row: int, dtype: np.dtype, n_ids: int):
        self.folder, self.split, self.index, self.row, self.dtype = folder, split, index, row, dtype
        self.rows_per_file = max(1, SHARD_TOKENS // row)
        self.pending = np.empty(0, dtype)
        self.files: list[tuple[str, int]] = []  # (file name, rows)
        self.unigram = np.zeros(n_ids, np.int64)  # of the tokens written, for the unigram entropy

    def write(self, tokens: np.ndarray) -> None:
        self.pending = np.concatenate([self.pending, tokens])
        whole = len(self.pending) // self.row * self.row
        rows, self.pending = self.pending[:whole].reshape(-1, self.row), self.pending[whole:]
        self.unigram += np.bincount(rows.ravel(), minlength=len(self.unigram))[:len(self.unigram)]
        while len(rows):
            if not self.files or self.files[-1][1] == self.rows_per_file:
                self.files.append((shard_name(self.split, self.index, len(self.files)), 0))
            name, written = self.files[-1]
            take = rows[:self.rows_per_file - written]
            with open(self.folder / name, "ab") as f:
                take.tofile(f)
            self.files[-1] = (name, written + len(take))
            rows = rows[len(take):]

    def close(self) -> list[Shard]:
        return [Shard(file=name, split=self.split, rows=rows, sample=sample_digest(self.folder / name),
                      **checksum(self.folder / name)) for name, rows in self.files]


def _encoded(encoder: DocumentEncoder, texts: Iterator[str], val_fraction: float) -> Iterator[tuple[list, list]]:
    """(split codes, token ids) of the non-empty documents, batch by batch, in order.

    Several batches are encoded at once: both encoders release the GIL, so while this thread packs one batch
    the encoder's threads work on the next ones, and one batch's stragglers overlap the others' bulk.
    """
    def batches() -> Iterator[tuple[list[int], list[str]]]:
        while batch := list(islice(texts, DOCS_PER_BATCH)):
            kept = [(code, text) for text in batch if (code := split_of(text, val_fraction)) != SKIP]
            yield [c for c, _ in kept], [t for _, t in kept]

    with ThreadPoolExecutor(max_workers=encoder.calls_in_flight) as pool:
        pending: deque = deque()
        for codes, batch in batches():
            pending.append((codes, pool.submit(encoder.encode_batch, batch)))
            if len(pending) == encoder.calls_in_flight:
                codes, ids = pending.popleft()
                yield codes, ids.result()
        for codes, ids in pending:
            yield codes, ids.result()


def _join(docs: list[list[int]], eos: int, dtype: np.dtype) -> np.ndarray:
    """The documents' tokens end to end, each followed by `eos`."""
    lengths = np.fromiter(map(len, docs), np.int64, len(docs))
    flat = np.fromiter(chain.from_iterable(docs), dtype, int(lengths.sum()))
    return np.insert(flat, np.cumsum(lengths), eos)


# --- finalizing ----------------------------------------------------------------------------------------------

def finalize(work: Work) -> None:
    """Publish every source whose slices are all prepared: shards, manifest, tokenizer. A slice missing is an
    error naming it (its task failed or has not run: rerun it, then finalize again)."""
    for s, (plan, target) in enumerate(zip(work.plans, work.targets)):
        if target.is_dir():
            continue
        missing = [p.index for p in plan.source.slices if not slice_dir(target, p.index).is_dir()]
        if missing:
            listed = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
            raise DataError(f"{work_dir(target)}: {len(missing)} of {len(plan.source.slices)} slices of "
                            f"{plan.source.description} are not prepared (slices {listed}); run `pretrain "
                            "prepare-data` again (it prepares only what is missing)")
        try:
            _publish_source(work, s)
        except ConfigError:
            remove(work_dir(target))  # these settings cannot make usable data: their slices are of no use
            raise
        remove(work_dir(target))


def _publish_source(work: Work, s: int) -> None:
    plan, target, cfg = work.plans[s], work.targets[s], work.cfg
    source, row = plan.source, cfg.seq_len + 1
    stats = [read_slice_stats(slice_dir(target, p.index)) for p in source.slices]
    unigram = sum(np.load(slice_dir(target, p.index) / UNIGRAM) for p in source.slices)
    train_documents, val_documents = sum(st.train_documents for st in stats), sum(st.val_documents for st in stats)
    if not train_documents and not val_documents:
        raise ConfigError(f"{source.setting}: {source.description} has no non-empty document")
    budget = None if cfg.max_tokens is None else cfg.max_tokens // row  # train rows kept, in slice order
    with atomic_output(target, directory=True) as staged:
        (staged / SHARDS).mkdir()
        shards = []
        for st in stats:
            for shard in st.shards:
                rows = shard.rows
                if shard.split == "train" and budget is not None:
                    rows = min(rows, budget)
                    budget -= rows
                if rows:
                    _link(slice_dir(target, st.slice) / shard.file, staged / SHARDS / shard.file)
                    shards.append(replace(shard, rows=rows))
        rows = {split: sum(sh.rows for sh in shards if sh.split == split) for split in SPLITS}
        for split, setting in (("train", "data.max_documents"), ("val", "data.val_fraction")):
            if rows[split] == 0:
                raise ConfigError(f"{setting}: the {split} split of {source.description} has no complete row of "
                                  f"seq_len + 1 = {row} tokens; use more documents or a shorter data.seq_len")
        shutil.copyfile(work.tokenizer, staged / TOKENIZER)
        np.save(staged / UNIGRAM, unigram)
        first = stats[0]  # every slice was encoded by one tokenizer
        write_manifest(staged, Manifest(
            source=source.description, identity=source.identity, revision=source.revision, tokenizer=cfg.tokenizer,
            tokenizer_digest=checksum(work.tokenizer)["digest"], encoder=first.encoder, vocab_size=first.vocab_size,
            eos_id=first.eos_id, seq_len=cfg.seq_len, dtype=first.dtype, documents=train_documents + val_documents,
            train_documents=train_documents, val_documents=val_documents,
            skipped_records=sum(st.skipped_records for st in stats),
            first_skipped=next((st.first_skipped for st in stats if st.first_skipped), None),
            train_rows=rows["train"], val_rows=rows["val"], train_tokens=rows["train"] * row,
            val_tokens=rows["val"] * row, train_shards=sum(sh.split == "train" for sh in shards),
            unigram_entropy=entropy(unigram), val_fraction=cfg.val_fraction, max_documents=cfg.max_documents,
            max_tokens=cfg.max_tokens,
            slices=[SliceCounts(slice=st.slice, input=st.input, train_documents=st.train_documents,
                                val_documents=st.val_documents) for st in stats],
            shards=shards))


def _link(source: Path, target: Path) -> None:
    """`target` as a hard link of `source` (the same bytes, no copy), or a copy across file systems."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
