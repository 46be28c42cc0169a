"""The rows each step trains on, as a pure function of (seed, step), and the fixed eval rows.

Sources: step k's global batch of B sequences gives each source a quota by its weight. The cumulative count of
source s after k steps is n_s(k) = floor(k·B·w_s + ½) for every source but the heaviest, which takes the rest,
so each step's quotas sum to B and every source's share over any run of steps is its weight to within one
sequence. The quota of step k is n_s(k+1) − n_s(k); a closed form, so resuming at any step needs no history.

Rows: source s's j-th sequence is row π_e(j mod R) of its R train rows, in epoch e = j div R, where π_e is a
pseudo-random permutation of [0, R) keyed by (seed, s, e): a 4-round Feistel network on the next even power of
two, walked until it lands below R. Every epoch visits every row once, and nothing of size R is ever held in
memory (a permutation of 10^8 rows would be 0.8 GB per rank). The batch's sequences are shuffled by a
generator seeded with (seed, k), so the sources mix within every micro batch.

Ranks take contiguous slices of the global batch, cut into micro batches in order: the data of a step does not
depend on the number of processes.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from .prepared import PreparedData

_MASK64 = np.uint64(2**64 - 1)


class StepSampler:
    """(source, row) of every sequence of step k's global batch, for sources of `sizes` train rows."""

    def __init__(self, sizes: list[int], weights: list[float], global_batch: int, seed: int):
        if not sizes or min(sizes) <= 0 or global_batch <= 0 or seed < 0 or len(sizes) != len(weights):
            raise ValueError(f"StepSampler needs sources with rows, a positive batch and seed >= 0; got sizes {sizes}, "
                             f"weights {weights}, batch {global_batch}, seed {seed}")
        self.sizes, self.global_batch, self.seed = sizes, global_batch, seed
        total = float(sum(weights))
        self.weights = [w / total for w in weights]
        self.heaviest = int(np.argmax(self.weights))
        if global_batch * self.weights[self.heaviest] < len(sizes) - 1:
            raise ValueError(f"a global batch of {global_batch} sequences is too small to mix {len(sizes)} sources")

    @classmethod
    def over(cls, data: PreparedData, split: str, global_batch: int, seed: int) -> StepSampler:
        """The sampler of `data`'s sources by their weights, over the rows of `split` ("train" or "val")."""
        return cls([len(getattr(s, split)) for s in data.sources], [s.weight for s in data.sources], global_batch,
                   seed)

    def seen(self, step: int) -> list[int]:
        """Sequences each source has given in steps 0 .. step-1."""
        counts = [int(np.floor(step * self.global_batch * w + 0.5)) for w in self.weights]
        counts[self.heaviest] = step * self.global_batch - (sum(counts) - counts[self.heaviest])
        return counts

    def indices(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(source, row) arrays of the step's global batch, in batch order."""
        before, after = self.seen(step), self.seen(step + 1)
        sources, rows = [], []
        for s, (start, stop) in enumerate(zip(before, after)):
            j = np.arange(start, stop, dtype=np.int64)
            epoch, position = np.divmod(j, self.sizes[s])
            picked = np.empty(len(j), np.int64)
            for e in np.unique(epoch):
                mask = epoch == e
                picked[mask] = permute(position[mask], self.sizes[s], _key(self.seed, s, int(e)))
            sources.append(np.full(len(j), s, np.int64))
            rows.append(picked)
        order = np.random.default_rng([self.seed, step]).permutation(self.global_batch)
        return np.concatenate(sources)[order], np.concatenate(rows)[order]


def permute(x: np.ndarray, n: int, key: int) -> np.ndarray:
    """π(x) for a pseudo-random permutation π of [0, n) determined by `key` (see the module docstring)."""
    bits = max(2, (n - 1).bit_length())
    bits += bits % 2
    half, mask = np.uint64(bits // 2), np.uint64((1 << (bits // 2)) - 1)
    keys = [np.uint64(k) for k in _round_keys(key)]
    out = np.asarray(x, dtype=np.uint64).copy()
    todo = np.ones(len(out), bool)
    while todo.any():
        left, right = out[todo] >> half, out[todo] & mask
        for k in keys:
            left, right = right, left ^ (_mix(right ^ k) & mask)
        out[todo] = (left << half) | right
        todo[todo] = out[todo] >= n  # outside [0, n): walk on through the cycle
    return out.astype(np.int64)


def _mix(x: np.ndarray) -> np.ndarray:
    """A 64-bit mixing function (splitmix64's finalizer)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9) & _MASK64
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB) & _MASK64
        return x ^ (x >> np.uint64(31))


def _round_keys(key: int) -> list[int]:
    digest = hashlib.blake2b(key.to_bytes(16, "little"), digest_size=32).digest()
    return [int.from_bytes(digest[i:i + 8], "little") for i in range(0, 32, 8)]


def _key(seed: int, source: int, epoch: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}/{source}/{epoch}".encode(), digest_size=15).digest(), "little")


def train_micro_batches(data: PreparedData, sampler: StepSampler, step: int, rank: int, world_size: int,
                        micro_batch_size: int) -> list[torch.Tensor]:
    """This rank's micro batches of step `step`: a contiguous slice of the global batch, cut in order."""
    sources, rows = sampler.indices(step)
    if len(rows) % (world_size * micro_batch_size):
        raise ValueError(f"global batch {len(rows)} is not a multiple of {world_size} processes × "
                         f"micro batch {micro_batch_size}")
    per_rank = len(rows) // world_size
    mine = slice(rank * per_rank, (rank + 1) * per_rank)
    tokens = _gather(data, sources[mine], rows[mine], "train")
    return [torch.from_numpy(tokens[i:i + micro_batch_size]) for i in range(0, per_rank, micro_batch_size)]


def eval_micro_batches(data: PreparedData, n_batches: int, micro_batch_size: int, rank: int,
                       world_size: int) -> list[torch.Tensor]:
    """A fixed eval set of `n_batches` micro batches split across ranks: each source's share by its weight,
    spread evenly over its val rows.

    Every rank gets the same number of batches (ceil(n_batches / world_size), so collective ops stay in step):
    when world_size divides n_batches the eval set does not depend on world_size; otherwise it is rounded up.
    """
    per_rank = -(-n_batches // world_size)
    total = per_rank * world_size * micro_batch_size
    shares = StepSampler.over(data, "val", total, 0).seen(1)
    sources = np.repeat(np.arange(len(shares)), shares)
    rows = np.concatenate([np.arange(n) * len(s.val) // max(n, 1) for n, s in zip(shares, data.sources)])
    mine = slice(rank * per_rank * micro_batch_size, (rank + 1) * per_rank * micro_batch_size)
    tokens = _gather(data, sources[mine], rows[mine].astype(np.int64), "val")
    return [torch.from_numpy(tokens[i:i + micro_batch_size]) for i in range(0, len(tokens), micro_batch_size)]


def _gather(data: PreparedData, sources: np.ndarray, rows: np.ndarray, split: str) -> np.ndarray:
    width = data.sources[0].train.shards[0].shape[1]
    out = np.empty((len(rows), width), np.int64)
    for s in np.unique(sources):
        mask = sources == s
        out[mask] = getattr(data.sources[s], split).take(rows[mask])
    return out
