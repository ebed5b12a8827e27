"""The two-stage predictor of the notebook (``BoxPredictor``): S1 proposes stem boxes, a
box or graph S2 network scores them, and the loop grammar assembles one structure."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from stembb.checkpoint import S2_BOX_KIND, S2_GNN_KIND, load_checkpoint
from stembb.s1.predict import decode_proposals, load_s1_model, predict_maps
from stembb.s2.engine import S2_KINDS, S2_MODELS, S2Model, item_slices
from stembb.sequences import check_sequence_list


def load_box_model(path: Path, device: torch.device) -> tuple[torch.nn.Module, S2Model, dict]:
    """The network of a box or graph S2 checkpoint in eval mode on ``device``, its spec
    and the checkpoint."""
    state = load_checkpoint(path, (S2_BOX_KIND, S2_GNN_KIND), map_location=device)
    spec = S2_MODELS[S2_KINDS[state["kind"]]]
    model = spec.build(state["config"]).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return model, spec, state


@dataclass
class BoxPredictor:
    """S1 and a box or graph S2 loaded from their checkpoints; ``timings`` accumulate
    seconds per step. ``gamma`` (the MEA decoder's) defaults to the value calibrated at
    the end of S2 training, stored in the checkpoint as ``decode_gamma``."""

    s1_model: torch.nn.Module
    s2_model: torch.nn.Module
    s2_spec: S2Model
    s2_config: dict
    device: torch.device
    threshold: float = 0.1
    gamma: float = 1.0
    batch_size: int = 16
    timings: dict = field(default_factory=lambda: {"s1_forward": 0.0, "s1_decode": 0.0, "s2": 0.0, "structure": 0.0})

    is_grammar = False
    reads_s1 = True
    threads = 1  # sequences go through S1 and S2 in batches, not on threads

    @classmethod
    def from_checkpoints(cls, s1_path: Path, s2_path: Path, device: torch.device, gamma: float | None = None,
                         **kwargs) -> "BoxPredictor":
        s2, spec, state = load_box_model(s2_path, device)
        s1 = load_s1_model(s1_path, device)[0]
        gamma = state.get("decode_gamma", 1.0) if gamma is None else gamma
        return cls(s1, s2, spec, state["config"], device, gamma=gamma, **kwargs)

    def predict(self, seqs: Sequence[str]) -> list[list[tuple[int, int]]]:
        """One structure (sorted 0-based pairs) per sequence (``check_sequence_list``)."""
        check_sequence_list(seqs, "Predictor.predict")
        return self.predict_checked(seqs)

    def predict_checked(self, seqs: Sequence[str]) -> list[list[tuple[int, int]]]:
        """``predict`` of sequences its caller has already checked."""
        return self.structures(seqs, self.proposals(seqs))

    def warm_up(self) -> None:
        """Fold one short sequence, so that one-off set-up is not counted in the first record's time."""
        self.predict(["GGGGAAACCCC"])

    @torch.no_grad()
    def proposals(self, seqs: Sequence[str]) -> list:
        """S1: the decoded box proposals of each sequence (``stembb.s1.predict.decode_proposals``)."""
        t = time.perf_counter()
        maps = predict_maps(self.s1_model, seqs, self.device, self.batch_size)
        self.timings["s1_forward"] += time.perf_counter() - t
        t = time.perf_counter()
        out = [decode_proposals(m, seq, self.threshold) for seq, m in zip(seqs, maps)]
        self.timings["s1_decode"] += time.perf_counter() - t
        return out

    @torch.no_grad()
    def structures(self, seqs: Sequence[str], proposals: Sequence) -> list[list[tuple[int, int]]]:
        """S2 over batches of sequences, then one valid structure per sequence. The network
        runs only when its logits count (a box model whose calibrated logit weight is 0
        decodes from its loop terms alone)."""
        t = time.perf_counter()
        examples = [self.s2_spec.from_proposals(seq, props, self.s2_config) for seq, props in zip(seqs, proposals)]
        logits: list = [None if e is None else np.zeros(self.s2_spec.n_items(e)) for e in examples]
        scored = [k for k, e in enumerate(examples) if e is not None] if self.s2_spec.uses_logits(self.s2_model) else []
        for start in range(0, len(scored), self.batch_size):
            idx = scored[start:start + self.batch_size]
            batch = self.s2_spec.collate([examples[k] for k in idx])
            flat = self.s2_model({k: v.to(self.device) for k, v in batch.items()}).double().cpu().numpy()
            for k, items in item_slices(self.s2_spec, examples, idx):
                logits[k] = flat[items]
        self.timings["s2"] += time.perf_counter() - t
        t = time.perf_counter()
        out = [self.s2_spec.decode(self.s2_model, ex, x, self.gamma) if ex is not None else []
               for ex, x in zip(examples, logits)]
        self.timings["structure"] += time.perf_counter() - t
        return out
