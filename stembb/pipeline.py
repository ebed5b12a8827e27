"""End-to-end prediction: sequence -> S1 proposals -> S2 pair scores -> one valid structure."""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from stembb.checkpoint import S2_KIND, load_model
from stembb.distributed import pick_device
from stembb.errors import InputError
from stembb.io import VALID_LETTERS
from stembb.s2.decode import decode_structure
from stembb.s1.predict import decode_proposals, load_s1_model, predict_maps
from stembb.s2.candidates import pair_features
from stembb.s2.gnn import build_graph, build_s2_model, collate_graphs


def load_s2_model(path: Path, device: torch.device):
    """The network of an S2 checkpoint, in eval mode."""
    return load_model(path, S2_KIND, build_s2_model, device)


@dataclass
class Predictor:
    """Both stages loaded from their checkpoints; ``timings`` accumulate seconds per step."""

    s1_model: torch.nn.Module
    s2_model: torch.nn.Module
    kmer: int
    device: torch.device
    threshold: float = 0.1
    gamma: float = 1.0
    batch_size: int = 16
    timings: dict = field(default_factory=lambda: {"s1_forward": 0.0, "s1_decode": 0.0, "s2": 0.0, "structure": 0.0})

    @classmethod
    def from_checkpoints(cls, s1_path: Path, s2_path: Path, device: torch.device, **kwargs) -> "Predictor":
        s1, _ = load_s1_model(s1_path, device)
        s2, state = load_s2_model(s2_path, device)
        return cls(s1, s2, state["config"]["kmer"], device, **kwargs)

    @torch.no_grad()
    def predict(self, seqs: Sequence[str]) -> list[list[tuple[int, int]]]:
        """One structure (sorted 0-based pairs) per sequence."""
        t = time.perf_counter()
        maps = predict_maps(self.s1_model, seqs, self.device, self.batch_size)
        self.timings["s1_forward"] += time.perf_counter() - t
        out = []
        for seq, m in zip(seqs, maps):
            t = time.perf_counter()
            features = pair_features(decode_proposals(m, seq, self.threshold))
            self.timings["s1_decode"] += time.perf_counter() - t
            if not features:
                out.append([])
                continue
            t = time.perf_counter()
            cands = list(features)
            batch = collate_graphs([build_graph(seq, cands, [features[p] for p in cands], self.kmer)])
            probs = torch.sigmoid(self.s2_model({k: v.to(self.device) for k, v in batch.items()})).cpu().numpy()
            self.timings["s2"] += time.perf_counter() - t
            t = time.perf_counter()
            out.append(decode_structure(len(seq), np.array(cands), probs, self.gamma, seq))
            self.timings["structure"] += time.perf_counter() - t
        return out


def add_predictor_args(p: argparse.ArgumentParser) -> None:
    """The flags every end-to-end script shares: checkpoints, threshold, gamma, device."""
    p.add_argument("--s1_model", type=Path, required=True, help="S1 checkpoint")
    p.add_argument("--s2_model", type=Path, required=True, help="S2 checkpoint")
    p.add_argument("--threshold_p", type=float, default=0.1, help="S1 p_on threshold in (0, 1)")
    p.add_argument("--gamma", type=float, default=1.0,
                   help="structure decoding: a pair is taken when p > 1/(gamma+1); larger favours recall")
    p.add_argument("--device", default=None)
    p.add_argument("--seed", type=int, default=0, help="logged; prediction has no randomness")


def make_predictor(args) -> "Predictor":
    """A Predictor from the flags of ``add_predictor_args``, after checking them."""
    if not 0 < args.threshold_p < 1:
        raise InputError(f"--threshold_p must be in (0, 1), got {args.threshold_p}")
    if args.gamma <= 0:
        raise InputError(f"--gamma must be positive, got {args.gamma}")
    device = pick_device(args.device)
    return Predictor.from_checkpoints(args.s1_model, args.s2_model, device, threshold=args.threshold_p, gamma=args.gamma)


def check_sequences(path: Path, records, max_length: int) -> None:
    """One-line InputError naming the first empty, non-ACGTUN or too long record."""
    for rec in records:
        if not rec.seq:
            raise InputError(f"{path}: record {rec.name!r} is empty")
        bad = set(rec.seq) - VALID_LETTERS
        if bad:
            raise InputError(f"{path}: record {rec.name!r} has letters outside ACGTUN: {''.join(sorted(bad))}")
        if len(rec.seq) > max_length:
            raise InputError(f"{path}: record {rec.name!r} is {len(rec.seq)} nt, longer than --max_length {max_length}")
