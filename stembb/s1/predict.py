"""S1 prediction: load a checkpoint, run the network on sequences, decode stem-box proposals.

Decoding (docs/DESIGN.md, "S1 decoding"), vectorized over pixels: every pixel i < j with
p_on > threshold (compared in float64) proposes the box with reference corner
(i - loc_x, j + loc_y) and the rounded scalar size (at least 1), and, unless the size
argmax is the catch-all class, a second one with the softmax size w. A pixel whose
location argmax is the catch-all class proposes nothing. Each
proposal carries ``prob_on`` and the product of its chosen softmax probabilities
(``prob_other``: loc_x * loc_y * size for the softmax size, loc_x * loc_y for the scalar
size). Identical boxes are merged, each keeping its pixel proposals (``Proposals``, flat
arrays, no per-box Python lists); boxes outside the sequence, with innermost pair not
i < j, or with a non-canonical pair are dropped.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from stembb.checkpoint import S1_KIND, load_model
from stembb.s1.model import build_model
from stembb.boxes import valid_boxes
from stembb.s1.targets import LOCATION_CLASSES, SIZE_CLASSES, one_hot

MAP_NAMES = ("p_on", "loc_x", "p_loc_x", "loc_y", "p_loc_y", "size", "p_size", "size_scalar")


def load_s1_model(path: Path, device: torch.device):
    """The network of an S1 checkpoint (hyperparameters from the checkpoint), in eval mode."""
    return load_model(path, S1_KIND, build_model, device)


# on CPU a batch holds at most this many pixels (L^2 per sequence): beyond it the
# activations fall out of cache and each sequence takes longer (bench/README.md)
CPU_BATCH_PIXELS = 100_000


def length_batches(lengths: Sequence[int], batch_size: int, device: torch.device) -> list[slice]:
    """Consecutive slices of ``lengths`` (sorted ascending) with at most ``batch_size``
    sequences and, on CPU, at most ``CPU_BATCH_PIXELS`` padded pixels (at least one
    sequence each)."""
    cap = CPU_BATCH_PIXELS if device.type == "cpu" else float("inf")
    batches, start = [], 0
    for end in range(1, len(lengths) + 1):
        if end - start > batch_size or (end - start > 1 and (end - start) * lengths[end - 1] ** 2 > cap):
            batches.append(slice(start, end - 1))
            start = end - 1
    if start < len(lengths):
        batches.append(slice(start, len(lengths)))
    return batches


def maps_of_outputs(raw: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """A network's ``(B, C, L, L)`` head outputs -> ``(B, L, L)`` numpy maps
    (``MAP_NAMES``): p_on, the argmax (uint8) and its probability for each softmax
    head, and the scalar size."""
    maps = {"p_on": torch.sigmoid(raw["stem_on"][:, 0].float()), "size_scalar": raw["sl_size"][:, 0].float()}
    for head, name in (("location_x", "loc_x"), ("location_y", "loc_y"), ("sm_size", "size")):
        p, arg = torch.softmax(raw[head].float(), dim=1).max(dim=1)
        maps[name], maps[f"p_{name}"] = arg.to(torch.uint8), p  # at most 12 classes
    return {k: v.cpu().numpy() for k, v in maps.items()}


@torch.no_grad()
def iter_maps(model, seqs: Sequence[str], device: torch.device, batch_size: int = 16,
              show_progress: bool = False) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """``(index into seqs, maps)`` per sequence, batch by batch in order of length
    (``length_batches``), so a caller can decode and drop each batch's maps before the
    next. Maps (``MAP_NAMES``, each ``(L, L)``, own memory): p_on, the argmax (uint8) and
    its probability for each softmax head, and the scalar size; sequences are padded in a
    batch and cropped back."""
    order = np.argsort([len(s) for s in seqs], kind="stable")
    for idx in tqdm(length_batches([len(seqs[k]) for k in order], batch_size, device), desc="S1 forward",
                    unit="batch", disable=not show_progress):
        idx = order[idx]
        n = max(len(seqs[k]) for k in idx)
        x = torch.zeros(len(idx), 4, n)
        for b, k in enumerate(idx):
            x[b, :, :len(seqs[k])] = torch.from_numpy(one_hot(seqs[k]))
        maps = maps_of_outputs(model(x.to(device), torch.tensor([len(seqs[k]) for k in idx])))
        for b, k in enumerate(idx):
            length = len(seqs[k])
            yield int(k), {name: maps[name][b, :length, :length].copy() for name in MAP_NAMES}


def predict_maps(model, seqs: Sequence[str], device: torch.device, batch_size: int = 16,
                 show_progress: bool = False) -> list[dict[str, np.ndarray]]:
    """``iter_maps`` collected in the order of ``seqs`` (for few sequences: every map is
    kept until the end)."""
    out: list = [None] * len(seqs)
    for k, maps in iter_maps(model, seqs, device, batch_size, show_progress):
        out[k] = maps
    return out


@dataclass
class Proposals:
    """The decoded proposals of one sequence, as flat arrays.

    Boxes, ``(n,)`` int64 each, sorted by box: ``bx, by`` the reference corner (outermost
    pair) and ``w`` the size. Pixel proposals, ``(m,)`` each, sorted by (box, source):
    ``box`` (int64 index into the boxes), ``source`` (int8: 0 softmax size, 1 scalar
    size), ``prob_on`` and ``prob_other`` (float64). A box's per-source probability lists
    (docs/DESIGN.md, "S1 decoding") are its entries of one source, in pixel order.
    """

    bx: np.ndarray
    by: np.ndarray
    w: np.ndarray
    box: np.ndarray
    source: np.ndarray
    prob_on: np.ndarray
    prob_other: np.ndarray

    def __len__(self) -> int:
        return len(self.bx)


def decode_proposals(maps: dict[str, np.ndarray], seq: str, threshold: float) -> Proposals:
    """The proposals of one sequence (docs/DESIGN.md, "S1 decoding")."""
    length = len(seq)
    # float64: a float32 p_on of exactly the threshold (e.g. 0.1) must not pass
    i, j = np.nonzero(np.triu(maps["p_on"].astype(np.float64) > threshold, k=1))
    lx, ly, sz = maps["loc_x"][i, j], maps["loc_y"][i, j], maps["size"][i, j]
    ok = (lx < LOCATION_CLASSES - 1) & (ly < LOCATION_CLASSES - 1)
    i, j, lx, ly, sz = i[ok], j[ok], lx[ok], ly[ok], sz[ok]
    p_on = maps["p_on"][i, j].astype(np.float64)
    p_loc = maps["p_loc_x"][i, j].astype(np.float64) * maps["p_loc_y"][i, j]
    x0, top = (i - lx).astype(np.int64), (j + ly).astype(np.int64)
    w_sm = sz.astype(np.int64) + 1
    w_sl = np.maximum(np.rint(maps["size_scalar"][i, j]), 1).astype(np.int64)
    n = len(i)
    # both sources stacked: source 0 = softmax size, 1 = scalar size
    bx, by = np.concatenate([x0, x0]), np.concatenate([top, top])
    w = np.concatenate([w_sm, w_sl])
    source = np.repeat(np.array([0, 1], dtype=np.int8), n)
    prob_on = np.concatenate([p_on, p_on])
    prob_other = np.concatenate([p_loc * maps["p_size"][i, j], p_loc])
    # a size catch-all (w > 10) silences only the softmax-size proposal: the scalar size can describe it
    kept = np.flatnonzero((bx >= 0) & (by < length) & np.concatenate([sz < SIZE_CLASSES - 1, np.ones(n, dtype=bool)]))
    # one-to-one on corners inside the sequence (sizes beyond the length are invalid anyway)
    key = (bx[kept] * length + by[kept]) * (length + 1) + np.minimum(w[kept], length)
    rank = np.argsort(key * 2 + source[kept], kind="stable")  # by box, source, then pixel (row-major)
    order, key = kept[rank], key[rank]
    first = np.r_[True, key[1:] != key[:-1]][:len(key)]
    group = np.cumsum(first) - 1
    heads = order[first]
    # validity is checked once per distinct box, not once per pixel proposal
    valid = valid_boxes(bx[heads], by[heads], w[heads], seq)
    entries = valid[group]
    order, heads = order[entries], heads[valid]
    return Proposals(bx[heads], by[heads], w[heads], (np.cumsum(valid) - 1)[group[entries]], source[order],
                     prob_on[order], prob_other[order])
