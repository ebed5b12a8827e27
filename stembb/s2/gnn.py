"""S2 baseline (the notebook's): a graph network that scores the S1 candidate pairs of a sequence.

Graph of one sequence: nodes are bases, embedded by the k-mer centred on them
(``kmer`` odd or even, window clipped at the ends, any N -> its own token); edges are
the backbone (i, i+1) and the candidate pairs, both directions. Edge features
(``EDGE_FEATURES`` = 8): [backbone, pair, log1p(n_sm), log1p(n_sl), four median
probabilities]. Each layer: h_i <- ReLU(W h_i + mean_j MLP([h_j, e_ij])) with plain
``index_add_``. A head scores each candidate from [h_i + h_j, h_i * h_j, e_ij].
Batches are disjoint unions of graphs (node indices offset per sequence).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Sequence

import numpy as np
import torch
from torch import nn

from stembb.s2.candidates import N_PAIR_FEATURES
from stembb.checkpoint import S2_GNN_KIND
from stembb.structure import base_codes

KIND = S2_GNN_KIND
EDGE_FEATURES = 2 + N_PAIR_FEATURES  # [backbone, pair] + the S1 features of a candidate pair


@dataclass
class GNNConfig:
    """Hyperparameters of the baseline ``PairGNN`` (flags of the same name), stored in its
    checkpoints as a plain dict."""

    kmer: int = 3  # k-mer length of the base embeddings
    embed_dim: int = 16  # k-mer embedding width
    hid: Sequence[int] = (32, 32, 32)  # message-passing layer widths


S2_CONFIG_KEYS = tuple(f.name for f in fields(GNNConfig))


def kmer_ids(seq: str, k: int) -> np.ndarray:
    """``(L,)`` k-mer token of each base: the k-mer starting floor((k-1)/2) before it,
    clipped to the sequence; 4**k for k-mers with a letter outside ACGTU."""
    codes = base_codes(seq)
    unknown = codes > 3
    length = len(seq)
    starts = np.clip(np.arange(length) - (k - 1) // 2, 0, max(length - k, 0))
    window = np.clip(starts[:, None] + np.arange(k)[None, :], 0, length - 1)
    ids = (codes[window] * (4 ** np.arange(k - 1, -1, -1))).sum(1)
    return np.where(unknown[window].any(1), 4 ** k, ids)


def pair_edge_features(features: Sequence[Sequence[float]]) -> np.ndarray:
    """``(n, 8)`` edge features of candidate pairs from their six S1 features."""
    f = np.asarray(features, dtype=np.float32).reshape(-1, N_PAIR_FEATURES)
    return np.concatenate([np.zeros((len(f), 1)), np.ones((len(f), 1)), np.log1p(f[:, :2]), f[:, 2:]],
                          axis=1).astype(np.float32)


def build_graph(seq: str, candidates, features, k: int, labels=None) -> dict[str, torch.Tensor]:
    """One sequence's graph: ``x`` (L,), ``edge_index`` (2, E), ``edge_attr`` (E, 8),
    ``pairs`` (P, 2) the candidates, ``pair_attr`` (P, 8), and ``labels`` (P,) if given."""
    length = len(seq)
    pairs = np.asarray(candidates, dtype=np.int64).reshape(-1, 2)
    pair_attr = pair_edge_features(features)
    backbone = np.stack([np.arange(length - 1), np.arange(1, length)], axis=1)
    bb_attr = np.zeros((len(backbone), EDGE_FEATURES), dtype=np.float32)
    bb_attr[:, 0] = 1
    src = np.concatenate([backbone[:, 0], backbone[:, 1], pairs[:, 0], pairs[:, 1]])
    dst = np.concatenate([backbone[:, 1], backbone[:, 0], pairs[:, 1], pairs[:, 0]])
    graph = {"x": torch.from_numpy(kmer_ids(seq, k)), "edge_index": torch.from_numpy(np.stack([src, dst])),
             "edge_attr": torch.from_numpy(np.concatenate([bb_attr, bb_attr, pair_attr, pair_attr])),
             "pairs": torch.from_numpy(pairs), "pair_attr": torch.from_numpy(pair_attr)}
    if labels is not None:
        graph["labels"] = torch.as_tensor(np.asarray(labels, dtype=np.float32))
    return graph


def collate_graphs(graphs: list[dict]) -> dict[str, torch.Tensor]:
    """Disjoint union; ``pair_graph`` (P,) says which graph each candidate belongs to."""
    offsets = np.cumsum([0] + [len(g["x"]) for g in graphs[:-1]])
    batch = {"x": torch.cat([g["x"] for g in graphs]),
             "edge_index": torch.cat([g["edge_index"] + int(o) for g, o in zip(graphs, offsets)], dim=1),
             "edge_attr": torch.cat([g["edge_attr"] for g in graphs]),
             "pairs": torch.cat([g["pairs"] + int(o) for g, o in zip(graphs, offsets)]),
             "pair_attr": torch.cat([g["pair_attr"] for g in graphs]),
             "pair_graph": torch.cat([torch.full((len(g["pairs"]),), n) for n, g in enumerate(graphs)])}
    if all("labels" in g for g in graphs):
        batch["labels"] = torch.cat([g["labels"] for g in graphs])
    return batch


class MessagePassing(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.self_proj = nn.Linear(in_dim, out_dim)
        self.message = nn.Sequential(nn.Linear(in_dim + EDGE_FEATURES, out_dim), nn.ReLU(), nn.Linear(out_dim, out_dim))

    def forward(self, h, edge_index, edge_attr):
        src, dst = edge_index
        msg = self.message(torch.cat([h[src], edge_attr], dim=1))
        agg = torch.zeros(h.shape[0], msg.shape[1], device=h.device, dtype=msg.dtype).index_add_(0, dst, msg)
        degree = torch.zeros(h.shape[0], device=h.device, dtype=msg.dtype).index_add_(
            0, dst, torch.ones_like(dst, dtype=msg.dtype))
        return torch.relu(self.self_proj(h) + agg / degree.clamp_min(1).unsqueeze(1))


class PairGNN(nn.Module):
    """k-mer embedding, message-passing layers of widths ``hid``, per-candidate logit."""

    def __init__(self, kmer: int, embed_dim: int, hid: Sequence[int]):
        super().__init__()
        self.embed = nn.Embedding(4 ** kmer + 1, embed_dim)
        dims = [embed_dim] + list(hid)
        self.layers = nn.ModuleList(MessagePassing(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.head = nn.Sequential(nn.Linear(2 * dims[-1] + EDGE_FEATURES, dims[-1]), nn.ReLU(), nn.Linear(dims[-1], 1))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(P,)`` logits of the batch's candidate pairs."""
        h = self.embed(batch["x"])
        for layer in self.layers:
            h = layer(h, batch["edge_index"], batch["edge_attr"])
        hi, hj = h[batch["pairs"][:, 0]], h[batch["pairs"][:, 1]]
        return self.head(torch.cat([hi + hj, hi * hj, batch["pair_attr"]], dim=1)).squeeze(1)


def build_s2_model(config: dict) -> PairGNN:
    return PairGNN(**asdict(GNNConfig(**{k: config[k] for k in S2_CONFIG_KEYS})))
