"""The loop terms as torch parameters, for training (``LoopTerms``), and ``S(y)`` as a
differentiable torch expression (``structure_score``). Folding reads the same tables as
numpy arrays (``LoopTerms.numpy()``, or a checkpoint read by ``stembb.checkpoint.read_arrays``)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from stembb.grammar.assemble import TERM_SHAPES, loop_counts


class LoopTerms(nn.Module):
    """The learned loop terms of ``S(y)`` (``TERM_SHAPES``), all zero at the start (a
    plain pair count), and the pair score's ``u_ij = pair_weight * (network logit) + pair_bias``."""

    def __init__(self):
        super().__init__()
        for name, shape in TERM_SHAPES.items():
            self.register_parameter(name, nn.Parameter(torch.zeros(shape)))
        self.pair_weight = nn.Parameter(torch.ones(()))
        self.pair_bias = nn.Parameter(torch.zeros(()))

    def numpy(self) -> dict[str, np.ndarray]:
        return {name: p.detach().cpu().double().numpy() for name, p in self.named_parameters()}


def structure_score(seq: str, structure, pair_index: dict, unary: torch.Tensor, terms: LoopTerms) -> torch.Tensor:
    """``S(y)`` of a nested candidate structure as a torch scalar (differentiable in the
    pair scores ``unary`` (P,) and in ``terms``); ``pair_index`` maps a pair to its row."""
    pairs, counts = loop_counts(seq, structure)
    rows = torch.as_tensor([pair_index[p] for p in map(tuple, pairs.tolist())], dtype=torch.long, device=unary.device)
    score = unary[rows].sum()
    for name, c in counts.items():
        param = getattr(terms, name)
        score = score + param.flatten() @ torch.as_tensor(c, dtype=param.dtype, device=param.device)
    return score
