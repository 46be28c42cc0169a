"""The batch sampler: a pure function of (seed, step) over sources and shards, every row once per epoch, the
same global batch at any world size, mixtures by weight, and rows read across shards as from one array."""

from pathlib import Path

import numpy as np
import pytest

from pretrain.data.prepared import PreparedData, PreparedSource, Rows
from pretrain.data.sampler import StepSampler, eval_micro_batches, permute, train_micro_batches


@pytest.mark.parametrize("n", [1, 2, 3, 10, 1000, 4097, 100_003])
def test_permute_is_a_bijection_and_depends_on_its_key(n):
    x = np.arange(n)
    once = permute(x, n, key=7)
    assert np.array_equal(np.sort(once), x)
    if n > 3:
        assert not np.array_equal(once, x) and not np.array_equal(once, permute(x, n, key=8))


def test_sampler_is_a_pure_function_of_seed_and_step():
    sampler = StepSampler([10], [1.0], global_batch=4, seed=3)
    run = [sampler.indices(k)[1] for k in range(12)]
    resumed = StepSampler([10], [1.0], global_batch=4, seed=3)
    assert all(np.array_equal(resumed.indices(k)[1], run[k]) for k in range(7, 12))  # restart at step 7
    samples = np.concatenate(run)  # 48 samples; steps 0-4 are the first 20, epochs 0 and 1: every row twice
    assert sorted(samples[:20]) == sorted(list(range(10)) * 2) and sorted(samples[:40]) == sorted(list(range(10)) * 4)
    assert not np.array_equal(StepSampler([10], [1.0], 4, seed=4).indices(0)[1], run[0])


def test_a_mixture_resumes_exactly_at_any_step():
    run = StepSampler([50, 30, 7], [0.5, 0.3, 0.2], global_batch=8, seed=1)
    batches = [run.indices(k) for k in range(40)]
    for restart in (0, 13, 39):
        fresh = StepSampler([50, 30, 7], [0.5, 0.3, 0.2], global_batch=8, seed=1)
        for k in range(restart, 40):
            assert all(np.array_equal(a, b) for a, b in zip(fresh.indices(k), batches[k]))


def test_every_row_once_per_epoch_of_a_source():
    sampler = StepSampler([50, 30], [1.0, 1.0], global_batch=8, seed=0)
    by_source = {0: [], 1: []}
    for step in range(15):  # 120 samples: 60 of each source
        sources, rows = sampler.indices(step)
        for s in (0, 1):
            by_source[s] += rows[sources == s].tolist()
    assert len(by_source[0]) == len(by_source[1]) == 60
    assert sorted(by_source[1][:30]) == sorted(by_source[1][30:]) == list(range(30))
    assert set(by_source[0]) == set(range(50))


def test_a_mixture_draws_by_weight_at_every_step():
    sampler = StepSampler([1000, 1000, 1000], [0.7, 0.2, 0.1], global_batch=16, seed=0)
    steps = 500
    counts = np.zeros(3)
    for step in range(steps):
        sources, _ = sampler.indices(step)
        per_step = np.bincount(sources, minlength=3)
        assert per_step.sum() == 16 and abs(per_step[1] - 16 * 0.2) < 1.5  # every step close to its share
        counts += per_step
    shares = counts / counts.sum()
    assert np.abs(shares - [0.7, 0.2, 0.1]).max() < 1 / (steps * 16) + 1e-12  # within one sequence in the run
    assert sampler.seen(steps) == counts.astype(int).tolist()


def rows_of(array: np.ndarray, cuts: list[int], vocab: int = 1000) -> Rows:
    """`array` (rows, width) as a Rows object over shards cut at `cuts`."""
    parts = np.split(array, cuts)
    return Rows(Path("prepared"), [Path(f"shard{i}") for i in range(len(parts))], parts, vocab)


def test_rows_across_shards_are_read_as_from_one_array():
    table = np.arange(37 * 5).reshape(37, 5) % 1000
    rows = rows_of(table, [10, 11, 30])
    index = np.array([36, 0, 10, 11, 9, 29, 30, 5])
    assert np.array_equal(rows.take(index), table[index]) and len(rows) == 37


def prepared(train: list[np.ndarray], val: list[np.ndarray], weights: list[float]) -> PreparedData:
    sources = [PreparedSource(f"s{i}", w, None, {}, rows_of(t, [len(t) // 3]), rows_of(v, []), np.ones(3))
               for i, (t, v, w) in enumerate(zip(train, val, weights))]
    return PreparedData(sources, None, 0)


def test_batches_do_not_depend_on_world_size():
    rng = np.random.default_rng(0)
    data = prepared([rng.integers(0, 1000, (40, 9)), rng.integers(0, 1000, (25, 9))],
                    [rng.integers(0, 1000, (7, 9)), rng.integers(0, 1000, (5, 9))], [0.75, 0.25])
    sampler = StepSampler([40, 25], [0.75, 0.25], global_batch=8, seed=0)
    for step in (0, 5):
        sources, rows = sampler.indices(step)
        expected = np.stack([data.sources[s].train.take(np.array([r]))[0] for s, r in zip(sources, rows)])
        for world in (1, 2, 4):
            parts = [batch for rank in range(world)
                     for batch in train_micro_batches(data, sampler, step, rank, world, 2)]
            assert all(b.shape == (2, 9) for b in parts)
            assert np.array_equal(np.concatenate([b.numpy() for b in parts]), expected)

    per_world = {}
    for world in (1, 2, 4):
        parts = [eval_micro_batches(data, 4, 2, rank, world) for rank in range(world)]
        assert len({len(p) for p in parts}) == 1  # every rank runs the same number of forward passes
        per_world[world] = np.concatenate([b.numpy() for p in parts for b in p])
    assert np.array_equal(per_world[1], per_world[2]) and np.array_equal(per_world[1], per_world[4])
    assert len(per_world[1]) == 8 and [len(eval_micro_batches(data, 4, 2, rank, 3)) for rank in range(3)] == [2, 2, 2]
