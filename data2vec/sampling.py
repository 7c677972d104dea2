"""The seeded, sharded, resumable data order of `data2vec.engine.pretrain`.

- The data order is a pure function of (seed, epoch): step k of an epoch reads the k-th slice of a seeded
  permutation, so the data position is a function of the step and resuming skips without replay.
- One optimiser step reads `world * grad_accum` shards of `batch_size` samples; shard s = rank * grad_accum
  + micro. Before a shard's forward the engine seeds the RNGs from (seed, step, s) (`shard_seed`), and each
  sample's augmentation is seeded from (seed, epoch, index) (`SeededItems`). So random masks, dropout and
  augmentations do not depend on the history of the run, and 1 process with grad_accum = 2 computes the same
  shards as 2 processes with grad_accum = 1.

Differences from the original: fairseq/BEiT keep one global RNG stream per worker (resuming replays or
re-seeds it approximately); here every shard and sample is seeded explicitly. Leftover samples of an epoch
(fewer than one global batch) are dropped, as `drop_last=True` does.
"""

from __future__ import annotations

import hashlib

import torch
from torch.utils.data import Dataset

from .checkpoint import seed_cpu_rngs

__all__ = ["SeededItems", "ShardSampler", "mix_seed", "shard_seed"]


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (sha256; independent streams for (seed, step, shard) tuples)."""
    digest = hashlib.sha256(",".join(str(int(v)) for v in values).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class SeededItems(Dataset):
    """dataset[(epoch, i)] = dataset[i] with the RNGs seeded from (seed, epoch, i): augmentation per sample."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key
        seed_cpu_rngs(mix_seed(self.seed, 1, epoch, index))  # the data pipeline runs on the CPU
        return self.dataset[index]


class ShardSampler:
    """Yields this rank's micro-batches of (epoch, index) from `start_step` on, forever.

    Step k uses global batch G = batch_size * grad_accum * world from epoch e = k // steps_per_epoch:
    perm_e[j * G : (j + 1) * G] with j = k % steps_per_epoch; shard s = rank * grad_accum + micro gets the
    s-th slice of `batch_size`. perm_e is a seeded permutation; leftover samples of an epoch are dropped.
    """

    def __init__(self, n: int, batch_size: int, grad_accum: int, world: int, rank: int, seed: int, start_step: int):
        self.n, self.b, self.accum, self.world, self.rank = n, batch_size, grad_accum, world, rank
        self.seed, self.start_step = seed, start_step
        self.global_batch = batch_size * grad_accum * world
        self.steps_per_epoch = n // self.global_batch

    def position(self, step: int) -> dict:
        """Where update `step` starts reading: its epoch and the offset of its global batch in that epoch."""
        epoch, j = divmod(step, self.steps_per_epoch)
        return {"epoch": epoch, "index_in_epoch": j * self.global_batch}

    def __iter__(self):
        step, perm, perm_epoch = self.start_step, None, -1
        while True:
            epoch, j = divmod(step, self.steps_per_epoch)
            if epoch != perm_epoch:
                g = torch.Generator().manual_seed(mix_seed(self.seed, 0, epoch))
                perm, perm_epoch = torch.randperm(self.n, generator=g).tolist(), epoch
            base = j * self.global_batch
            for micro in range(self.accum):
                s = (self.rank * self.accum + micro) * self.b + base
                yield [(epoch, i) for i in perm[s : s + self.b]]
            step += 1


def shard_seed(seed: int, step: int, shard: int) -> int:
    """The RNG seed of shard `shard` (= rank * grad_accum + micro) of update `step`."""
    return mix_seed(seed, 2, step, shard)
