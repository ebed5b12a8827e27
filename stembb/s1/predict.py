"""S1 prediction: load a checkpoint, run the network on sequences, decode stem-box proposals.

Decoding (docs/DESIGN.md, "S1 decoding"), vectorized over pixels: every pixel i < j with
p_on > threshold (compared in float64) proposes the box with reference corner
(i - loc_x, j + loc_y) and the rounded scalar size (at least 1), and, unless the size
argmax is the catch-all class, a second one with the softmax size w. A pixel whose
location argmax is the catch-all class proposes nothing. Each
proposal carries ``prob_on`` and the product of its chosen softmax probabilities
(``prob_other``: loc_x * loc_y * size for the softmax size, loc_x * loc_y for the scalar
size). Identical boxes are merged, keeping the per-source lists of probabilities; boxes
outside the sequence, with innermost pair not i < j, or with a non-canonical pair are
dropped.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from stembb.checkpoint import S1_KIND, load_model
from stembb.s1.model import build_model
from stembb.boxes import valid_boxes
from stembb.s1.targets import LOCATION_CLASSES, SIZE_CLASSES, one_hot

PROPOSAL_COLUMNS = ["bb_x", "bb_y", "siz_x", "siz_y", "prob_on_sm", "prob_other_sm", "prob_on_sl", "prob_other_sl"]
MAP_NAMES = ("p_on", "loc_x", "p_loc_x", "loc_y", "p_loc_y", "size", "p_size", "size_scalar")


def load_s1_model(path: Path, device: torch.device):
    """The network of an S1 checkpoint (hyperparameters from the checkpoint), in eval mode."""
    return load_model(path, S1_KIND, build_model, device)


@torch.no_grad()
def iter_maps(model, seqs: Sequence[str], device: torch.device, batch_size: int = 16,
              show_progress: bool = False) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """``(index into seqs, maps)`` per sequence, batch by batch in order of length, so a
    caller can decode and drop each batch's maps before the next. Maps (``MAP_NAMES``,
    each ``(L, L)``, own memory): p_on, the argmax (uint8) and its probability for each
    softmax head, and the scalar size; sequences are padded in a batch and cropped back."""
    order = np.argsort([len(s) for s in seqs], kind="stable")
    for start in tqdm(range(0, len(seqs), batch_size), desc="S1 forward", unit="batch", disable=not show_progress):
        idx = order[start:start + batch_size]
        n = max(len(seqs[k]) for k in idx)
        x = torch.zeros(len(idx), 4, n)
        for b, k in enumerate(idx):
            x[b, :, :len(seqs[k])] = torch.from_numpy(one_hot(seqs[k]))
        raw = model(x.to(device), torch.tensor([len(seqs[k]) for k in idx]))
        maps = {"p_on": torch.sigmoid(raw["stem_on"][:, 0].float()), "size_scalar": raw["sl_size"][:, 0].float()}
        for head, name in (("location_x", "loc_x"), ("location_y", "loc_y"), ("sm_size", "size")):
            p, arg = torch.softmax(raw[head].float(), dim=1).max(dim=1)
            maps[name], maps[f"p_{name}"] = arg.to(torch.uint8), p  # at most 12 classes
        del raw
        maps = {k: v.cpu().numpy() for k, v in maps.items()}
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


def decode_proposals(maps: dict[str, np.ndarray], seq: str, threshold: float) -> pd.DataFrame:
    """Proposals of one sequence as a DataFrame with ``PROPOSAL_COLUMNS``, sorted by box.

    ``bb_x, bb_y`` is the reference corner (outermost pair), ``siz_x = siz_y`` the size.
    """
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
    source = np.repeat([0, 1], n)
    prob_on = np.concatenate([p_on, p_on])
    prob_other = np.concatenate([p_loc * maps["p_size"][i, j], p_loc])
    # a size catch-all (w > 10) silences only the softmax-size proposal: the scalar size can describe it
    keep = valid_boxes(bx, by, w, seq) & np.concatenate([sz < SIZE_CLASSES - 1, np.ones(n, dtype=bool)])
    bx, by, w, source, prob_on, prob_other = (a[keep] for a in (bx, by, w, source, prob_on, prob_other))
    if not len(bx):
        return pd.DataFrame({c: pd.Series(dtype=object if c.startswith("prob") else np.int64) for c in PROPOSAL_COLUMNS})
    key = (bx * (length + 1) + by) * (length + 1) + np.minimum(w, length)
    order = np.lexsort((source, key))
    key, bx, by, w, source, prob_on, prob_other = (a[order] for a in (key, bx, by, w, source, prob_on, prob_other))
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    ends = np.r_[starts[1:], len(key)]
    # sorted by (box, source): a group's softmax-size entries come before its scalar ones
    mids = starts + np.add.reduceat(source == 0, starts)
    cols = {"bb_x": bx[starts], "bb_y": by[starts], "siz_x": w[starts], "siz_y": w[starts]}
    on, other = prob_on.tolist(), prob_other.tolist()
    bounds = list(zip(starts.tolist(), mids.tolist(), ends.tolist()))
    cols["prob_on_sm"] = [on[a:m] for a, m, _ in bounds]
    cols["prob_other_sm"] = [other[a:m] for a, m, _ in bounds]
    cols["prob_on_sl"] = [on[m:e] for _, m, e in bounds]
    cols["prob_other_sl"] = [other[m:e] for _, m, e in bounds]
    return pd.DataFrame(cols)[PROPOSAL_COLUMNS]
