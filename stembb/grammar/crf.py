"""Training the grammar model (``stembb.grammar.model``) by conditional log-likelihood.

``GrammarCRF`` holds the grammar model's numbers as torch parameters: the loop terms
(``LoopTerms``, nats) and, for a model with S1 evidence, the linear weights ``w`` of
``u_ij = pair_bias + w . f_ij``. Training maximises ``S(ref) - log Z`` of reference
structures, whose gradient is observed minus expected counts of each term
(``stembb.grammar.partition``), plus an L2 pull of the loop terms toward their starting
point (the fit to ViennaRNA's energies, divided by ``KT``), so the model learns from real
structures without forgetting its physics. ``GrammarCRF.folding()`` is the model as it
folds and decodes (``GrammarFold``), in numpy.

With a deep S1 (``network``, ``stembb.grammar.network``), its ``pair`` logit is added to
``u_ij``; the same backward pass gives it the gradient ``p_ij - y_ij`` (probability
minus reference indicator) at every allowed pair, and its stem-box heads learn from the
reference's boxes beside it (``losses``).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import nn

from stembb.grammar.assemble import TERM_SHAPES
from stembb.grammar.model import DEFAULT_DECODER, KT, Example, GrammarFold, make_example
from stembb.grammar.network import heads_loss, load_network, network_entry, network_outputs, pair_logits
from stembb.grammar.partition import ensemble
from stembb.grammar.terms import LoopTerms, structure_score
from stembb.s1.model import build_model


class _LogPartition(torch.autograd.Function):
    """log Z of one example as a function of its pair scores and the loop terms; the
    backward pass returns the pair probabilities and the expected loop-term counts."""

    @staticmethod
    def forward(ctx, seq, pairs, unary, *params):
        terms = {name: p.detach().double().cpu().numpy() for name, p in zip(TERM_SHAPES, params)}
        ens = ensemble(seq, pairs, unary.detach().double().cpu().numpy(), terms, counts=True)
        ctx.probs = torch.as_tensor(ens.probs, dtype=unary.dtype, device=unary.device)
        ctx.counts = [torch.as_tensor(ens.counts[name].reshape(p.shape), dtype=p.dtype, device=p.device)
                      for name, p in zip(TERM_SHAPES, params)]
        return torch.tensor(ens.log_z, dtype=unary.dtype, device=unary.device)

    @staticmethod
    def backward(ctx, grad):
        return (None, None, grad * ctx.probs, *[grad * c for c in ctx.counts])


class GrammarCRF(nn.Module):
    """The grammar model's trainable numbers: loop terms and evidence weights
    (``n_evidence`` of them, 0 for the grammar alone); ``config`` is what the checkpoint
    stores to rebuild it."""

    def __init__(self, n_evidence: int = 0, max_span: int | None = None, network: dict | None = None):
        super().__init__()
        self.terms = LoopTerms()
        self.evidence = nn.Linear(n_evidence, 1, bias=False) if n_evidence else None
        if self.evidence is not None:
            nn.init.zeros_(self.evidence.weight)
        self.max_span = max_span
        self.network = None if network is None else build_model(network)

    @property
    def config(self) -> dict:
        return {"n_evidence": 0 if self.evidence is None else self.evidence.in_features, "max_span": self.max_span}

    def example(self, seq: str, p_on: np.ndarray | None = None, reference=None) -> Example:
        return make_example(seq, self.max_span, self.evidence is not None, p_on, reference)

    def unary(self, example: Example) -> torch.Tensor:
        """``(P,)`` pair scores, nats."""
        bias = self.terms.pair_bias.expand(len(example.pairs))
        if self.evidence is None or example.features is None:
            return bias
        return bias + self.evidence(torch.as_tensor(example.features, dtype=bias.dtype)).squeeze(1)

    def nll(self, example: Example, unary: torch.Tensor | None = None) -> torch.Tensor:
        """``log Z - S(reference)`` of one example, nats (differentiable); ``unary``: its pair scores."""
        unary = self.unary(example) if unary is None else unary
        params = [getattr(self.terms, name) for name in TERM_SHAPES]
        log_z = _LogPartition.apply(example.seq, example.pairs, unary, *params)
        index = {p: k for k, p in enumerate(map(tuple, example.pairs.tolist()))}
        return log_z - structure_score(example.seq, example.reference, index, unary, self.terms)

    def losses(self, example: Example) -> dict[str, torch.Tensor]:
        """Named losses of one example: ``nll`` (nats) and, with a network, ``heads``
        (the stem-box heads' S1 loss)."""
        if self.network is None:
            return {"nll": self.nll(example)}
        outputs = network_outputs(self.network, example)
        unary = self.unary(example) + pair_logits(outputs, example.pairs).to(self.terms.pair_bias.dtype)
        return {"nll": self.nll(example, unary), "heads": heads_loss(outputs, example)}

    @torch.no_grad()
    def folding(self, decoder: dict | None = None, network: bool = True) -> GrammarFold:
        """The model as it is now, as the numpy ``GrammarFold`` that predicts (with
        ``decoder`` settings); its network, if any, a copy in eval mode on the CPU, or
        none with ``network`` False (the grammar alone, whose ensemble the network reads)."""
        weight = None if self.evidence is None else self.evidence.weight.detach().cpu().numpy().reshape(-1)
        terms = {name: value for name, value in self.terms.numpy().items() if name != "pair_weight"}
        copy = load_network(network_entry(self.network)) if network and self.network is not None else None
        return GrammarFold(terms, weight, self.max_span, decoder or dict(DEFAULT_DECODER), copy)


def set_energy_terms(model: GrammarCRF, energy_terms: LoopTerms) -> None:
    """Loop terms and pair bias from energy-fitted ones (minus kcal/mol): divided by KT."""
    with torch.no_grad():
        for name, p in energy_terms.named_parameters():
            if name != "pair_weight":
                getattr(model.terms, name).copy_(p / KT)


def pull(model: GrammarCRF, anchor: dict[str, torch.Tensor]) -> torch.Tensor:
    """Squared distance of the loop terms and pair bias from ``anchor`` (nats squared)."""
    return sum(((getattr(model.terms, name) - value) ** 2).sum() for name, value in anchor.items())


def batch_nll(model: GrammarCRF, examples: list[Example], threads: int = 1) -> torch.Tensor:
    """Mean ``nll`` per reference pair over ``examples``. With ``threads`` > 1 the
    partition functions run on a thread pool (the compiled recursions release the GIL)."""
    return batch_losses(model, examples, threads)["nll"]


def batch_losses(model: GrammarCRF, examples: list[Example], threads: int = 1) -> dict[str, torch.Tensor]:
    """``losses`` over ``examples``: ``nll`` per reference pair and ``heads`` per example,
    each the mean over the examples. Without a network, ``threads`` > 1 runs the partition
    functions on a thread pool (the compiled recursions release the GIL); with one, the
    examples go one at a time (the network's convolutions use torch's own threads)."""
    if threads > 1 and len(examples) > 1 and model.network is None:
        with ThreadPoolExecutor(threads) as pool:
            parts = list(pool.map(model.losses, examples))
    else:
        parts = [model.losses(e) for e in examples]
    sizes = torch.as_tensor([max(len(e.reference), 1) for e in examples], dtype=parts[0]["nll"].dtype)
    out = {"nll": (torch.stack([p["nll"] for p in parts]) / sizes).mean()}
    if "heads" in parts[0]:
        out["heads"] = torch.stack([p["heads"] for p in parts]).mean()
    return out
