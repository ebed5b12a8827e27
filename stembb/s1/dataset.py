"""S1 training data: filtering, dataset, padding collate and the
length-bucketing batch sampler."""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from stembb.io import VALID_LETTERS
from stembb.s1.targets import PACKED_CHANNELS, one_hot, pack_targets, stem_targets


def filter_rows(df: pd.DataFrame, max_length: int) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop rows longer than ``max_length`` and sequences with letters outside ACGTUN;
    return the kept rows and the number dropped per reason."""
    upper = df["seq"].str.upper()
    too_long = upper.str.len() > max_length
    bad_letters = ~upper.map(lambda s: set(s) <= VALID_LETTERS)
    dropped = {f"longer than --max_length {max_length}": int(too_long.sum()),
               "letters outside ACGTUN": int((bad_letters & ~too_long).sum())}
    return df[~too_long & ~bad_letters].reset_index(drop=True), dropped


class StemBoxDataset(Dataset):
    """Item k: ``(x (4, L) float32, packed targets (5, L, L) uint8)`` built on the fly
    (``stembb.s1.targets.pack_targets``; the training loop unpacks them on the device)."""

    def __init__(self, seqs: Sequence[str], boxes: Sequence, local_unmask_offset: int):
        self.seqs = list(seqs)
        self.boxes = list(boxes)
        self.offset = local_unmask_offset

    def __len__(self) -> int:
        return len(self.seqs)

    def __getitem__(self, k: int):
        seq = self.seqs[k]
        return one_hot(seq), pack_targets(stem_targets(len(seq), self.boxes[k], self.offset))


def collate(items) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest sequence: x ``(B, 4, Lmax)`` float32, packed targets
    ``(B, 5, Lmax, Lmax)`` uint8. Padding pixels have all flags 0 (not valid, not
    unmasked, not in a stem), so they never contribute to a loss or metric.
    """
    n = max(x.shape[1] for x, _ in items)
    xs = torch.zeros(len(items), 4, n)
    packed = torch.zeros((len(items), PACKED_CHANNELS, n, n), dtype=torch.uint8)
    for b, (x, t) in enumerate(items):
        length = x.shape[1]
        xs[b, :, :length] = torch.from_numpy(x)
        packed[b, :, :length, :length] = torch.from_numpy(t)
    return xs, packed


class LengthBatchSampler(Sampler[list[int]]):
    """Batches of similar length (sorted with random tie-breaking, cut into batches, batch
    order shuffled), split across ``num_replicas`` ranks so each gets the same number.

    Call ``set_epoch`` before each epoch for a new order; the order depends only on
    (seed, epoch).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, shuffle: bool, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        tie = rng.random(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        order = np.lexsort((tie, self.lengths))
        batches = [order[k:k + self.batch_size] for k in range(0, len(order), self.batch_size)]
        if self.shuffle:
            batches = [batches[k] for k in rng.permutation(len(batches))]
        per_rank = math.ceil(len(batches) / self.num_replicas)
        # tile, so every rank gets the same number of batches even with fewer batches than
        # ranks (an empty rank would leave the others waiting in their collectives)
        batches = [batches[k % len(batches)] for k in range(per_rank * self.num_replicas)] if batches else []
        return batches[self.rank::self.num_replicas]

    def __iter__(self) -> Iterator[list[int]]:
        return (b.tolist() for b in self._batches())

    def __len__(self) -> int:
        return math.ceil(math.ceil(len(self.lengths) / self.batch_size) / self.num_replicas)
