"""S1 training data: filtering, train/validation split, dataset, padding collate and the
length-bucketing batch sampler."""
from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from stembb.io import VALID_LETTERS
from stembb.s1.targets import one_hot, stem_targets

def filter_rows(df: pd.DataFrame, max_length: int) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop rows longer than ``max_length`` and sequences with letters outside ACGTUN;
    return the kept rows and the number dropped per reason."""
    upper = df["seq"].str.upper()
    too_long = upper.str.len() > max_length
    bad_letters = ~upper.map(lambda s: set(s) <= VALID_LETTERS)
    dropped = {f"longer than --max_length {max_length}": int(too_long.sum()),
               "letters outside ACGTUN": int((bad_letters & ~too_long).sum())}
    return df[~too_long & ~bad_letters].reset_index(drop=True), dropped


def split_by_sequence(df: pd.DataFrame, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the training and validation sets. Rows that share a sequence (the
    samples of one segment) stay on one side; the split depends only on the data and seed."""
    seqs = df["seq"].to_numpy()
    unique = np.unique(seqs)
    rng = np.random.default_rng([seed, 17])
    n_val = int(round(val_fraction * len(unique)))
    val_seqs = set(unique[rng.permutation(len(unique))[:n_val]])
    is_val = np.fromiter((s in val_seqs for s in seqs), dtype=bool, count=len(seqs))
    return np.nonzero(~is_val)[0], np.nonzero(is_val)[0]


class StemBoxDataset(Dataset):
    """Item k: ``(x (4, L) float32, targets dict of (L, L) arrays)`` built on the fly."""

    def __init__(self, seqs: Sequence[str], boxes: Sequence, local_unmask_offset: int):
        self.seqs = list(seqs)
        self.boxes = list(boxes)
        self.offset = local_unmask_offset

    def __len__(self) -> int:
        return len(self.seqs)

    def __getitem__(self, k: int):
        seq = self.seqs[k]
        return one_hot(seq), stem_targets(len(seq), self.boxes[k], self.offset)


def collate(items) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Pad to the longest sequence: x ``(B, 4, Lmax)``, targets ``(B, Lmax, Lmax)``.

    Padding pixels are outside ``unmasked`` and ``in_stem`` and carry ``valid`` False, so
    they never contribute to a loss or metric.
    """
    n = max(x.shape[1] for x, _ in items)
    xs = torch.zeros(len(items), 4, n)
    targets = {k: torch.zeros((len(items), n, n), dtype=torch.from_numpy(v).dtype) for k, v in items[0][1].items()}
    targets["valid"] = torch.zeros((len(items), n, n), dtype=torch.bool)
    for b, (x, t) in enumerate(items):
        length = x.shape[1]
        xs[b, :, :length] = torch.from_numpy(x)
        for k, v in t.items():
            targets[k][b, :length, :length] = torch.from_numpy(v)
        targets["valid"][b, :length, :length] = True
    return xs, targets


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
