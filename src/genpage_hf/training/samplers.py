"""Training samplers whose order a resumed run reproduces exactly, for every `train_sampling_strategy`.

On resume, `Trainer` builds a new sampler, iterates it from the start of the resumed epoch and skips
the batches already trained (accelerate's `skip_first_batches`); the checkpoint's RNG states are
restored only after that skip. So a run resumes exactly when each epoch's order depends on the seed
and the epoch alone:

- random: accelerate swaps `RandomSampler` for its `SeedableRandomSampler` (seed + epoch);
- sequential: no randomness;
- batch_rebalance: transformers' `BatchRebalanceSampler` shuffles with its own generator (its seed +
  epoch; `Trainer` calls its `set_epoch`). Its seed is a fixed 42: `ResumableSampling` sets the run's;
- group_by_length: transformers' `LengthGroupedSampler` is built without a generator, so it draws
  its permutation from the global torch RNG at the start of each epoch. A run resumed in epoch e>0
  draws it from the RNG of a fresh process instead of the RNG left by epochs 0..e-1, and trains on
  other batches. `EpochSeededLengthGroupedSampler` below draws it from (seed + epoch) instead.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.trainer_pt_utils import BatchRebalanceSampler, LengthGroupedSampler


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """`LengthGroupedSampler` whose permutation of epoch e is drawn from a generator seeded with `seed + e`
    (the same epoch gives the same order in an uninterrupted and in a resumed run; epochs differ)."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int) -> None:
        super().__init__(batch_size, lengths=lengths, generator=torch.Generator())
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        # Called by Trainer (through accelerate's DataLoaderShard.set_epoch) before each epoch is iterated.
        self.epoch = epoch

    def __iter__(self):
        self.generator.manual_seed(self.seed + self.epoch)
        return super().__iter__()


class ResumableSampling:
    """Trainer mixin: `train_sampling_strategy="group_by_length"` samples with `EpochSeededLengthGroupedSampler`,
    so that a resumed run trains on the same batches (the other strategies already do), and both
    group_by_length and batch_rebalance shuffle by the run's `data_seed` (else `seed`), as random does.
    TRL's trainers override the same `_get_train_sampler` hook."""

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        sampler = super()._get_train_sampler(train_dataset)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        if type(sampler) is LengthGroupedSampler:  # transformers' own, unseeded: same lengths and batch size
            sampler = EpochSeededLengthGroupedSampler(sampler.batch_size, sampler.lengths, seed)
        elif isinstance(sampler, BatchRebalanceSampler):
            sampler.seed = seed
        return sampler


__all__ = ["EpochSeededLengthGroupedSampler", "ResumableSampling"]
