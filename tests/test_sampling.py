"""The seeded, sharded, resumable data order (data2vec/sampling.py), checked without a training loop."""

from __future__ import annotations

import itertools

import pytest
import torch

from data2vec.checkpoint import set_seed
from data2vec.sampling import SeededItems, ShardSampler, mix_seed, shard_seed


def micro_batches(n, batch_size, grad_accum, world, rank, seed=3, start_step=0, steps=1):
    """The micro-batches of `steps` updates for one rank, grouped per update."""
    sampler = ShardSampler(n, batch_size, grad_accum, world, rank, seed, start_step)
    flat = list(itertools.islice(iter(sampler), steps * grad_accum))
    return [flat[s * grad_accum:(s + 1) * grad_accum] for s in range(steps)]


def test_the_shards_of_an_update_are_disjoint_and_cover_one_global_batch():
    n, b, accum, world = 50, 3, 2, 2
    for step in range(8):
        shards = [mb for rank in range(world)
                  for mb in micro_batches(n, b, accum, world, rank, start_step=step)[0]]
        indices = [i for shard in shards for _, i in shard]
        assert len(shards) == world * accum and all(len(s) == b for s in shards)
        assert len(set(indices)) == len(indices) == b * accum * world  # disjoint


def test_an_epoch_visits_every_sample_at_most_once_and_drops_only_the_remainder():
    n, b, accum, world = 50, 4, 1, 3  # global batch 12: 4 updates per epoch, 2 samples left over
    sampler = ShardSampler(n, b, accum, world, 0, seed=1, start_step=0)
    assert sampler.steps_per_epoch == 4
    seen = [i for rank in range(world) for update in micro_batches(n, b, accum, world, rank, seed=1, steps=4)
            for shard in update for epoch, i in shard if epoch == 0]
    assert len(seen) == len(set(seen)) == 48 and set(seen) <= set(range(n))
    next_epoch = [e for rank in range(world) for update in
                  micro_batches(n, b, accum, world, rank, seed=1, start_step=4, steps=1) for shard in update
                  for e, _ in shard]
    assert set(next_epoch) == {1}
    first, second = (torch.randperm(n, generator=torch.Generator().manual_seed(mix_seed(1, 0, e))) for e in (0, 1))
    assert not torch.equal(first, second)  # each epoch has its own permutation


def test_grad_accum_two_in_one_process_equals_two_processes():
    n, b = 40, 4
    one = micro_batches(n, b, grad_accum=2, world=1, rank=0, steps=5)
    two = [micro_batches(n, b, grad_accum=1, world=2, rank=r, steps=5) for r in range(2)]
    for step in range(5):
        assert one[step][0] == two[0][step][0] and one[step][1] == two[1][step][0]
        # and the shard seeds agree: shard s = rank * grad_accum + micro
        assert shard_seed(3, step, 0 * 2 + 1) == shard_seed(3, step, 1 * 1 + 0)


def test_resuming_at_a_step_continues_the_same_order():
    full = micro_batches(30, 2, 1, 1, 0, steps=20)
    resumed = micro_batches(30, 2, 1, 1, 0, start_step=7, steps=13)
    assert full[7:] == resumed
    sampler = ShardSampler(30, 2, 1, 1, 0, seed=3, start_step=0)
    assert sampler.position(17) == {"epoch": 1, "index_in_epoch": 4}


def test_seeded_items_make_each_sample_reproducible_whatever_came_before():
    class Noise:
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return torch.rand(3)  # reads the global RNG, like an augmentation

    items = SeededItems(Noise(), seed=9)
    a = items[(2, 4)]
    set_seed(123)
    torch.rand(100)
    assert torch.equal(items[(2, 4)], a)
    assert not torch.equal(items[(3, 4)], a)  # another epoch, another augmentation


@pytest.mark.parametrize("values", [(1, 2, 3), (0,), (2**40, 7)])
def test_mix_seed_is_a_63_bit_function_of_its_inputs(values):
    assert mix_seed(*values) == mix_seed(*values) and 0 <= mix_seed(*values) < 2**63
    assert mix_seed(*values) != mix_seed(*values, 0)


def test_cpu_seeding_draws_the_streams_of_set_seed():
    """seed_cpu_rngs (the per-sample seeding of the data pipeline) leaves python, numpy and torch's CPU generator
    exactly where set_seed does, without the lazy CUDA seeding that made each call cost ~0.75 ms."""
    import random

    import numpy as np

    from data2vec.checkpoint import seed_cpu_rngs, set_seed

    draws = []
    for seeder in (set_seed, seed_cpu_rngs):
        seeder(1234567)
        draws.append((random.random(), float(np.random.rand()), torch.rand(3).tolist()))
    assert draws[0] == draws[1]
