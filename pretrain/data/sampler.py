"""The batches each step trains on, as a pure function of (seed, step), and the fixed eval batches."""

from __future__ import annotations

import numpy as np
import torch

from .shards import PreparedData


class StepSampler:
    """The train rows of each step's global batch: a pure function of (seed, step).

    Global sample i is row perm_e[i % n_rows] of epoch e = i // n_rows, perm_e a permutation seeded by
    (seed, e): every epoch visits each row once, and resuming at step k replays exactly the batches of an
    uninterrupted run, whatever the number of processes.
    """

    def __init__(self, n_rows: int, global_batch: int, seed: int):
        if n_rows <= 0 or global_batch <= 0 or seed < 0:
            raise ValueError(f"StepSampler needs n_rows > 0, global_batch > 0 and seed >= 0; got {n_rows}, "
                             f"{global_batch}, {seed}")
        self.n_rows, self.global_batch, self.seed = n_rows, global_batch, seed
        self._perms: dict[int, np.ndarray] = {}  # the epochs of the latest steps

    def indices(self, step: int) -> np.ndarray:
        sample = np.arange(step * self.global_batch, (step + 1) * self.global_batch, dtype=np.int64)
        epoch, position = np.divmod(sample, self.n_rows)
        rows = np.empty(self.global_batch, np.int64)
        for e in np.unique(epoch):
            mask = epoch == e
            rows[mask] = self._permutation(int(e))[position[mask]]
        return rows

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) >= 2:
                del self._perms[min(self._perms)]
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n_rows)
        return self._perms[epoch]


def train_micro_batches(data: PreparedData, sampler: StepSampler, step: int, rank: int, world_size: int,
                        micro_batch_size: int) -> list[torch.Tensor]:
    """This rank's micro batches of step `step`: a contiguous slice of the global batch, cut in order."""
    rows = sampler.indices(step)
    if len(rows) % (world_size * micro_batch_size):
        raise ValueError(f"global batch {len(rows)} is not a multiple of {world_size} processes × "
                         f"micro batch {micro_batch_size}")
    per_rank = len(rows) // world_size
    mine = rows[rank * per_rank:(rank + 1) * per_rank]
    return [_tensor(data.train, mine[i:i + micro_batch_size]) for i in range(0, per_rank, micro_batch_size)]


def eval_micro_batches(data: PreparedData, n_batches: int, micro_batch_size: int, rank: int,
                       world_size: int) -> list[torch.Tensor]:
    """A fixed eval set of `n_batches` micro batches, spread evenly over the val rows, split across ranks.

    Every rank gets the same number of batches (ceil(n_batches / world_size), so collective ops stay in step):
    when world_size divides n_batches the eval set does not depend on world_size; otherwise it is rounded up.
    """
    per_rank = -(-n_batches // world_size)
    total = per_rank * world_size * micro_batch_size
    rows = np.arange(total) * len(data.val) // total  # repeats rows only when val has fewer than `total`
    mine = rows[rank * per_rank * micro_batch_size:(rank + 1) * per_rank * micro_batch_size]
    return [_tensor(data.val, mine[i:i + micro_batch_size]) for i in range(0, len(mine), micro_batch_size)]


def _tensor(shard: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(shard[rows].astype(np.int64))  # (len(rows), seq_len + 1)
