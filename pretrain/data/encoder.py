"""Documents to token ids: tiktoken's BPE where it provably returns the tokenizer's own ids, else the tokenizer.

`document_encoder(tokenizer, threads)` wraps a `tokenizers.Tokenizer`. tiktoken encodes the embedded corpus about 3x
faster than `tokenizers` on the same cores, so it is used whenever it is an exact twin; the two agree on every
text when
1. both cut text into the same pieces: no truncation or padding, no normalizer, GPT-2's byte-level regex as the
   only pre-tokenizer, no post-processor that adds tokens, and added tokens that match as plain substrings,
   none inside another (both split them out of the text before anything else);
2. every non-byte token is made by exactly one merge, merges come in id order, and a merge's parts have lower
   ids than its result;
3. the merges turn every token's bytes into that token.
Why: under 2, `tokenizers` applies merge k everywhere in a piece, left to right, before merge k + 1. A span
whose ends stay symbol boundaries evolves as it would alone, so by 3, once a token t's bytes are exactly two
symbols, they are t's merge and they join on t's turn. The pairs tiktoken can join (those whose concatenation is
a token, lowest id first, leftmost first) are then exactly the merges, in the same order, and tiktoken's
whole-piece lookup returns what the merges would. The two regex engines (Oniguruma and fancy-regex) agree on
every assigned Unicode character (tests/test_encoder.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

import tiktoken
from tokenizers import Tokenizer, models

GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
INERT_POST_PROCESSORS = (None, "ByteLevel")  # post-processors that add no tokens


@dataclass(frozen=True)
class DocumentEncoder:
    name: str  # "tiktoken" or "tokenizers"
    encode_batch: Callable[[list[str]], list[list[int]]]  # documents -> their ids, no EOS added
    calls_in_flight: int  # concurrent calls (from threads: both encoders release the GIL) that fill the cores


def document_encoder(tokenizer: Tokenizer, threads: int) -> DocumentEncoder:
    """tiktoken's twin of `tokenizer` when one exists (see the module docstring), else the tokenizer itself.

    `tokenizers` spreads one call over its own thread pool (sized by RAYON_NUM_THREADS), so two calls in flight
    keep the cores busy; a tiktoken call is one thread, so `threads` calls are needed, plus one.
    """
    twin = tiktoken_twin(tokenizer)
    if twin is None:  # encode_batch_fast: no character offsets, which we do not need
        return DocumentEncoder("tokenizers", lambda texts: [e.ids for e in tokenizer.encode_batch_fast(texts)], 2)
    # allowed_special="all": added tokens written in the text become their ids, as `tokenizers` does
    return DocumentEncoder("tiktoken", lambda texts: [twin.encode(t, allowed_special="all") for t in texts],
                           threads + 1)


def usable_cores() -> int:
    """The cores this process may run on: a Slurm job gets some of a node's, not all of them."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def tiktoken_twin(tokenizer: Tokenizer) -> tiktoken.Encoding | None:
    """A tiktoken Encoding giving the same ids as `tokenizer` on every text, or None if none is known to."""
    spec = json.loads(tokenizer.to_str())
    model, pre_tokenizer = spec["model"], spec["pre_tokenizer"] or {}
    post_processor = (spec["post_processor"] or {}).get("type")
    if (tokenizer.encode_special_tokens or spec["truncation"] or spec["padding"]
            or spec["normalizer"] is not None or post_processor not in INERT_POST_PROCESSORS
            or pre_tokenizer.get("type") != "ByteLevel" or pre_tokenizer.get("add_prefix_space")
            or not pre_tokenizer.get("use_regex", True)
            or model["type"] != "BPE" or model.get("dropout") or model.get("continuing_subword_prefix")
            or model.get("end_of_word_suffix")):
        return None
    added = {t["content"]: t["id"] for t in spec["added_tokens"]}
    if any(t["lstrip"] or t["rstrip"] or t["single_word"] for t in spec["added_tokens"]) or any(
            a != b and a in b for a in added for b in added):
        return None
    vocab: dict[str, int] = model["vocab"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    if not _merges_in_id_order(vocab, merges, added) or not _tokens_encode_to_themselves(vocab, merges, added):
        return None
    to_byte = {char: byte for byte, char in enumerate(byte_level_alphabet())}
    if any(char not in vocab for char in to_byte):
        return None  # a byte without a token: `tokenizers` would drop or replace it
    ranks = {bytes(to_byte[char] for char in token): i for token, i in vocab.items() if token not in added}
    return tiktoken.Encoding("twin", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens=added)


def byte_level_alphabet() -> list[str]:
    """GPT-2's byte-level alphabet: entry b is the character that stands for byte b in the vocabulary."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = iter(range(256, 512))  # the other bytes, in order, move to unused code points
    return [chr(b) if b in printable else chr(next(shifted)) for b in range(256)]


def _merges_in_id_order(vocab: dict[str, int], merges: list[tuple[str, ...]], added: dict[str, int]) -> bool:
    """Condition 2: one merge per non-byte token, in id order, each result above its parts."""
    last = -1
    for left, right in merges:
        result = left + right
        ids = [vocab.get(left), vocab.get(right), vocab.get(result)]
        if None in ids or result in added or not max(ids[0], ids[1], last) < ids[2]:
            return False
        last = ids[2]
    return True


def _tokens_encode_to_themselves(vocab: dict[str, int], merges: list[tuple[str, ...]],
                                 added: dict[str, int]) -> bool:
    """Condition 3, by the merges alone (a model with `ignore_merges` would look its tokens up instead)."""
    by_merges = models.BPE(vocab, merges, ignore_merges=False)
    return all([t.id for t in by_merges.tokenize(token)] == [i] for token, i in vocab.items() if token not in added)
