"""The batch sampler: a pure function of (seed, step), the same global batch at any world size."""

import numpy as np

from pretrain.data.sampler import StepSampler, eval_micro_batches, train_micro_batches


def test_sampler_is_a_pure_function_of_seed_and_step():
    sampler = StepSampler(n_rows=10, global_batch=4, seed=3)
    run = [sampler.indices(k) for k in range(12)]
    resumed = StepSampler(n_rows=10, global_batch=4, seed=3)
    assert all(np.array_equal(resumed.indices(k), run[k]) for k in range(7, 12))  # restart at step 7
    assert all(np.array_equal(sampler.indices(k), run[k]) for k in range(12))
    samples = np.concatenate(run)  # 48 samples: epochs 0..3 each visit all 10 rows once, epoch 4 has 8
    for e in range(4):
        assert sorted(samples[e * 10:(e + 1) * 10]) == list(range(10))
    assert not np.array_equal(samples[:10], samples[10:20])  # a fresh order each epoch
    assert not np.array_equal(StepSampler(10, 4, seed=4).indices(0), run[0])


def test_batches_do_not_depend_on_world_size(embedded):
    _, data = embedded
    sampler = StepSampler(len(data.train), global_batch=8, seed=0)
    for step in (0, 5):
        global_batch = data.train[sampler.indices(step)].astype(np.int64)
        for world in (1, 2, 4):
            parts = [batch for rank in range(world)
                     for batch in train_micro_batches(data, sampler, step, rank, world, 2)]
            assert all(b.shape == (2, data.train.shape[1]) for b in parts)
            assert np.array_equal(np.concatenate([b.numpy() for b in parts]), global_batch)

    per_world = {}
    for world in (1, 2, 4):
        parts = [eval_micro_batches(data, 4, 2, rank, world) for rank in range(world)]
        assert len({len(p) for p in parts}) == 1  # every rank runs the same number of forward passes
        per_world[world] = np.concatenate([b.numpy() for p in parts for b in p])
    assert np.array_equal(per_world[1], per_world[2]) and np.array_equal(per_world[1], per_world[4])
    assert len(np.unique(per_world[1], axis=0)) == min(8, len(data.val))
    assert [len(eval_micro_batches(data, 4, 2, rank, 3)) for rank in range(3)] == [2, 2, 2]
