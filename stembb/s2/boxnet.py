"""S2 box transformer: every distinct S1 stem box of a sequence is one token, and
attention between tokens is biased by how their two boxes relate on the pairing map.

Token of a box (reference corner ``(bx, by)``, size ``w``; docs/DESIGN.md, "Stage 2"):

* numbers (``N_NUMERIC``): size, position and span relative to the sequence length, the
  length of the region it encloses, the S1 evidence (pixel-proposal counts, median and
  max probabilities; ``stembb.s2.candidates.BOX_COLUMNS``) and its share of GC/AU/GU pairs;
* sequence: the sum of learned embeddings of its stacked pair steps (pair type of pair k
  and k+1: 6 x 6 canonical types), the types of its outermost and innermost pairs, and
  the bases flanking it outside (bx - 1, by + 1) and inside (bx + w, by - w).

Relation of box b to box a (``relations``, ``N_RELATIONS`` kinds): itself; sharing a base
on the same anti-diagonal (a shifted or trimmed copy) or on another; crossing
(pseudoknot); side by side; b inside a, or a inside b, each bucketed by the unpaired
bases between them (0 = b stacks directly on a, the same stem split in two). Each
attention head adds a learned bias per relation kind to its logits, so layers can learn
which stems exclude, continue or enclose one another.

The network gives one logit per box: whether all its pairs are reference pairs.
Examples carry the box-to-pair map (``pairs``, ``entry_pair``, ``entry_item``): a pair
lies on the anti-diagonal of one or more boxes, and takes the largest of their logits as
its score in the structure assembly (``stembb.grammar.assemble``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stembb.boxes import anti_diagonal
from stembb.grammar.assemble import N_PAIR_TYPES, PAIR_TYPE, base_at
from stembb.grammar.terms import LoopTerms
from stembb.s2.candidates import BOX_COLUMNS
from stembb.checkpoint import S2_BOX_KIND
from stembb.structure import base_codes

KIND = S2_BOX_KIND
N_RELATIONS = 17
LOOP_BUCKETS = np.array([1, 3, 6, 11, 21])  # enclosed unpaired bases: 0 | 1-2 | 3-5 | 6-10 | 11-20 | 21+
STACK_PAD = N_PAIR_TYPES * N_PAIR_TYPES
N_NUMERIC = 19


@dataclass
class BoxNetConfig:
    """Hyperparameters of the box transformer, stored in its checkpoints."""

    dim: int = 64
    layers: int = 3
    heads: int = 4
    dropout: float = 0.1
    max_boxes: int = 256


def top_boxes(table: np.ndarray, max_boxes: int) -> np.ndarray:
    """The ``max_boxes`` rows of a box table with the most S1 evidence (largest max
    ``prob_on``, then most pixel proposals), in their original order. Attention costs
    grow with the square of the number of boxes; the weakest boxes rarely hold
    reference pairs the others miss."""
    if len(table) <= max_boxes:
        return table
    evidence = table[:, BOX_COLUMNS.index("max_prob_on")] + 0.01 * np.log1p(table[:, 3] + table[:, 4])
    keep = np.sort(np.argsort(-evidence, kind="stable")[:max_boxes])
    return table[keep]


def relations(bx: np.ndarray, by: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``(n, n)`` uint8 relation kind of box b (column) to box a (row); see module doc."""
    return _relations(np.asarray(bx, dtype=np.int64), np.asarray(by, dtype=np.int64), np.asarray(w, dtype=np.int64),
                      LOOP_BUCKETS)


@numba.njit(cache=True, nogil=True)
def _relations(bx, by, w, buckets):
    # compiled: in numpy this takes a dozen (n, n) temporaries
    n = len(bx)
    rel = np.zeros((n, n), dtype=np.uint8)
    for a in range(n):
        ax, ay = bx[a], by[a]
        a_in, a_out = ax + w[a] - 1, ay - w[a] + 1  # 5' arm end, 3' arm start
        for c in range(n):
            if c == a:
                continue
            cx, cy = bx[c], by[c]
            c_in, c_out = cx + w[c] - 1, cy - w[c] + 1
            # an arm of a and an arm of c hold a common base
            share = ((ax <= c_in and cx <= a_in) or (ax <= cy and c_out <= a_in)
                     or (a_out <= c_in and cx <= ay) or (a_out <= cy and c_out <= ay))
            if share:
                rel[a, c] = 1 if ax + ay == cx + cy else 2
            elif ax > c_in and ay < c_out:  # a inside c
                rel[a, c] = 11 + np.searchsorted(buckets, (ax - c_in - 1) + (c_out - ay - 1), side="right")
            elif cx > a_in and cy < a_out:  # c inside a
                rel[a, c] = 5 + np.searchsorted(buckets, (cx - a_in - 1) + (a_out - cy - 1), side="right")
            elif cy < ax or ay < cx:
                rel[a, c] = 4  # side by side
            else:
                rel[a, c] = 3  # crossing
    return rel


def box_example(seq: str, table: np.ndarray, ref_pairs=None) -> dict[str, np.ndarray]:
    """Model inputs of one sequence's boxes (``table``: ``(n, len(BOX_COLUMNS))``), and,
    given the reference pairs, ``labels`` (1 when every pair of the box is a reference pair)."""
    length = len(seq)
    table = np.asarray(table, dtype=np.float32).reshape(-1, len(BOX_COLUMNS))
    bx, by, w = (table[:, k].astype(np.int64) for k in range(3))
    codes = base_codes(seq)
    ii, jj, on = anti_diagonal(bx, by, w)
    ptype = np.where(on, PAIR_TYPE[codes[np.clip(ii, 0, length - 1)], codes[np.clip(jj, 0, length - 1)]], 0)
    stacks = np.where(on[:, 1:], ptype[:, :-1] * N_PAIR_TYPES + ptype[:, 1:], STACK_PAD)
    if not stacks.shape[1]:
        stacks = np.full((len(bx), 1), STACK_PAD)
    rows = np.arange(len(bx))
    n_pairs = np.maximum(w, 1)
    gc = (np.isin(ptype, (2, 3)) & on).sum(1) / n_pairs
    au = (np.isin(ptype, (0, 1)) & on).sum(1) / n_pairs
    inner = (by - w + 1) - (bx + w - 1) - 1
    f = table[:, 3:]
    numeric = np.stack([
        w / 10, np.log(n_pairs), bx / length, by / length, (by - bx + 1) / length, np.log1p(np.maximum(inner, 0)),
        np.full(len(bx), math.log(length) / 5), (length - 1 - by) / length,
        np.log1p(f[:, 0]), np.log1p(f[:, 1]), *(f[:, k] for k in range(2, f.shape[1])),
        gc, au, 1 - gc - au,
    ], axis=1).astype(np.float32)
    example = {
        "numeric": numeric, "stacks": stacks.astype(np.int64),
        "outer": ptype[:, 0], "inner": ptype[rows, np.maximum(w - 1, 0)],
        "flank_out": base_at(codes, bx - 1) * 5 + base_at(codes, by + 1),
        "flank_in": base_at(codes, bx + w) * 5 + base_at(codes, by - w),
        "relations": relations(bx, by, w), "boxes": np.stack([bx, by, w], axis=1), "seq": seq,
    }
    example["pairs"], example["entry_pair"], example["entry_item"] = box_pairs(example["boxes"])
    if ref_pairs is not None:
        ref = np.zeros((length, length), dtype=bool)
        ref_pairs = np.asarray(list(ref_pairs), dtype=np.int64).reshape(-1, 2)
        ref[ref_pairs[:, 0], ref_pairs[:, 1]] = True
        hit = ref[np.clip(ii, 0, length - 1), np.clip(jj, 0, length - 1)] | ~on
        example["labels"] = hit.all(axis=1).astype(np.float32)
        example["pair_labels"] = ref[example["pairs"][:, 0], example["pairs"][:, 1]]
    return example


def collate_boxes(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Pad a list of ``box_example`` dicts to the most boxes (``pad`` True on padding);
    ``labels``, when all examples have them, are flat over the real boxes in order."""
    n = max(max(len(e["numeric"]) for e in examples), 1)
    k = max(e["stacks"].shape[1] for e in examples)
    b = len(examples)
    batch = {"numeric": torch.zeros(b, n, N_NUMERIC), "stacks": torch.full((b, n, k), STACK_PAD, dtype=torch.long),
             "relations": torch.zeros(b, n, n, dtype=torch.uint8), "pad": torch.ones(b, n, dtype=torch.bool)}
    for name in ("outer", "inner", "flank_out", "flank_in"):
        batch[name] = torch.zeros(b, n, dtype=torch.long)
    for r, e in enumerate(examples):
        m = len(e["numeric"])
        batch["numeric"][r, :m] = torch.from_numpy(e["numeric"])
        batch["stacks"][r, :m, :e["stacks"].shape[1]] = torch.from_numpy(e["stacks"])
        batch["relations"][r, :m, :m] = torch.from_numpy(e["relations"])
        batch["pad"][r, :m] = False
        for name in ("outer", "inner", "flank_out", "flank_in"):
            batch[name][r, :m] = torch.from_numpy(e[name])
    if all("labels" in e for e in examples):
        batch["labels"] = torch.from_numpy(np.concatenate([e["labels"] for e in examples]))
    return batch


class RelationAttention(nn.Module):
    """Pre-norm transformer layer whose attention logits get a learned bias per relation kind."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        # only its weight is used, by BoxTransformer.forward, which builds every layer's bias
        # at once (the shipped box checkpoint stores it as relation_bias.weight)
        self.relation_bias = nn.Linear(N_RELATIONS, heads, bias=False)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``h`` (B, N, D), ``bias`` (B, heads, N, N) attention-logit bias (relation bias,
        -inf on padded keys) -> (B, N, D)."""
        b, n, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        h = h + self.dropout(self.proj(attn.transpose(1, 2).reshape(b, n, d)))
        return h + self.dropout(self.ff(self.norm2(h)))


class BoxTransformer(nn.Module):
    """Box tokens -> relation-biased attention layers -> one logit per box."""

    def __init__(self, dim: int = 64, layers: int = 3, heads: int = 4, dropout: float = 0.1):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
        self.numeric = nn.Linear(N_NUMERIC, dim)
        self.stack = nn.Embedding(STACK_PAD + 1, dim, padding_idx=STACK_PAD)
        self.pair = nn.ModuleDict({name: nn.Embedding(N_PAIR_TYPES, dim) for name in ("outer", "inner")})
        self.flank = nn.ModuleDict({name: nn.Embedding(25, dim) for name in ("flank_out", "flank_in")})
        self.layers = nn.ModuleList(RelationAttention(dim, heads, dropout) for _ in range(layers))
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 1))
        self.terms = LoopTerms()  # used by the structure assembly, not by forward

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Flat logits of the real (non-padding) boxes, in example order: ``(M,)``."""
        h = self.numeric(batch["numeric"]) + self.stack(batch["stacks"]).sum(2)
        for name, emb in (*self.pair.items(), *self.flank.items()):
            h = h + emb(batch[name])
        pad = batch["pad"]
        # every layer's relation bias from one product: (N_RELATIONS, layers * heads)
        weight = torch.cat([layer.relation_bias.weight for layer in self.layers]).t().contiguous()
        if torch.is_grad_enabled():
            # a matmul with the one-hot relations: on CPU its backward is far cheaper than an
            # embedding lookup's scatter over B * N * N indices
            bias = F.one_hot(batch["relations"].long(), N_RELATIONS).to(h.dtype) @ weight
        else:  # the same numbers, gathered: no (B, N, N, N_RELATIONS) one-hot tensor
            bias = F.embedding(batch["relations"].long(), weight)
        key_mask = torch.zeros(pad.shape, dtype=h.dtype, device=h.device).masked_fill(pad, float("-inf"))[:, None, None]
        # head-major and contiguous once, so no layer's attention copies its slice
        bias = (bias.permute(0, 3, 1, 2) + key_mask).contiguous()
        for k, layer in enumerate(self.layers):
            h = layer(h, bias[:, k * layer.heads:(k + 1) * layer.heads])
        return self.head(h).squeeze(-1)[~pad]


def build_boxnet(config: dict) -> BoxTransformer:
    return BoxTransformer(**{k: config[k] for k in ("dim", "layers", "heads", "dropout")})


def box_pairs(boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs on the boxes' anti-diagonals: ``pairs (P, 2)`` unique and sorted, and for
    every (box, pair) incidence ``(E,)`` its pair index and its box index."""
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 3)
    if not len(boxes):
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    ii, jj, on = anti_diagonal(boxes[:, 0], boxes[:, 1], boxes[:, 2])
    n = int(jj[on].max()) + 1
    uniq, entry_pair = np.unique(ii[on] * n + jj[on], return_inverse=True)
    entry_box = np.broadcast_to(np.arange(len(boxes))[:, None], on.shape)[on]
    return np.stack([uniq // n, uniq % n], axis=1), entry_pair, entry_box
