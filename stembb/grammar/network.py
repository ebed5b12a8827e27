"""The deep S1 inside the grammar model (``stembb.s1.model.DeepStemNet``): what it reads
(the pair image and the grammar-alone ensemble), what it adds (its ``pair`` logit, nats,
at each allowed pair), its pair map (``pair_on``: the probability that a pair is in the
structure, crossing pairs too, which the pseudoknot layer reads), the loss of its heads,
and its checkpoint entry.

The network reads the ensemble of the loop terms without it (pair probabilities, each
base's unpaired probability, the MEA structure at gamma 1), so it learns what the
grammar misses rather than what the grammar already knows; the loop terms are kept
fixed while it trains, so the ensemble it reads at prediction is the one it trained on.
"""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F

from stembb.grammar.model import Example, decode_ensemble
from stembb.grammar.partition import Ensemble
from stembb.s1.engine import s1_losses
from stembb.s1.model import DeepS1Config, DeepStemNet, build_model, grammar_channels
from stembb.s1.targets import one_hot, pack_targets, stem_targets, unpack_targets
from stembb.structure import local_structure_boxes

VIEW_GAMMA = 1.0  # the MEA structure the network reads
HEADS_MASK = 0.0  # the notebook's --mask and --local_unmask_offset for the stem-box heads
HEADS_UNMASK_OFFSET = 4


def grammar_view(example: Example, ens: Ensemble) -> tuple[np.ndarray, list]:
    """What the network reads of the grammar-alone ensemble ``ens`` of ``example``:
    ``(P,)`` float32 pair probabilities (``ens.pairs`` are ``example.pairs``) and its MEA structure."""
    return ens.probs.astype(np.float32), decode_ensemble(ens, example.seq, "mea", VIEW_GAMMA)


def network_outputs(network: DeepStemNet, example: Example) -> dict[str, torch.Tensor]:
    """The network's ``(1, C, L, L)`` maps for one example (on the network's device)."""
    device = next(network.parameters()).device
    x = torch.from_numpy(one_hot(example.seq))[None].to(device)
    grammar = None
    if network.grammar_inputs:
        probs, structure = example.grammar
        grammar = torch.from_numpy(grammar_channels(len(example.seq), example.pairs, probs, structure))[None]
        grammar = grammar.to(device)
    return network(x, grammar=grammar)


def pair_logits(outputs: dict[str, torch.Tensor], pairs: np.ndarray, head: str = "pair") -> torch.Tensor:
    """``(P,)`` the ``head`` map at ``pairs`` (i < j), on the CPU."""
    rows, cols = torch.from_numpy(pairs[:, 0]), torch.from_numpy(pairs[:, 1])
    return outputs[head][0, 0].cpu()[rows, cols]


@torch.no_grad()
def network_scores(network: DeepStemNet, example: Example) -> tuple[np.ndarray, np.ndarray]:
    """``(P,)`` float32 nats the network adds to ``example``'s pair scores, and ``(P,)``
    float32 its pair map's probability of each pair."""
    outputs = network_outputs(network, example)
    return (pair_logits(outputs, example.pairs).numpy().astype(np.float32),
            torch.sigmoid(pair_logits(outputs, example.pairs, "pair_on")).numpy().astype(np.float32))


@torch.no_grad()
def iter_network_maps(fold, seqs, show_progress: bool = False):
    """``(index into seqs, maps)`` per sequence, as ``stembb.s1.predict.iter_maps`` gives
    them for a plain S1 (its ``MAP_NAMES``), from the deep S1 of the grammar model
    ``fold`` (each sequence's grammar-alone ensemble first): the notebook's S1
    evaluation (``evaluation/run_s1_inference.py``) reads the deep network this way."""
    from tqdm import tqdm

    from stembb.s1.predict import MAP_NAMES, maps_of_outputs
    for k, seq in enumerate(tqdm(seqs, desc="deep S1", unit="seq", disable=not show_progress)):
        example = fold.example(seq)
        fold.add_grammar_views([example])
        maps = maps_of_outputs(network_outputs(fold.network, example))
        yield k, {name: maps[name][0] for name in MAP_NAMES}


def heads_loss(outputs: dict[str, torch.Tensor], example: Example) -> torch.Tensor:
    """The notebook's S1 loss (``stembb.s1.engine.s1_losses``, summed) of the stem-box
    heads against the stem boxes of every reference pair, crossing ones included, plus
    the pair map's cross-entropy over the allowed pairs against those pairs."""
    length = len(example.seq)
    targets = stem_targets(length, local_structure_boxes(example.full_reference), HEADS_UNMASK_OFFSET)
    packed = torch.from_numpy(pack_targets(targets))[None].to(outputs["pair"].device)
    reference = set(example.full_reference)
    is_pair = torch.as_tensor([tuple(p) in reference for p in example.pairs.tolist()], dtype=torch.float32)
    pair_map = F.binary_cross_entropy_with_logits(pair_logits(outputs, example.pairs, "pair_on").float(), is_pair)
    return sum(s1_losses(outputs, unpack_targets(packed), HEADS_MASK).values()) + pair_map


def network_entry(network: DeepStemNet) -> dict:
    """The checkpoint entry of a network: its config and weights (CPU tensors)."""
    return {"config": asdict(network.config), "model": {k: v.detach().cpu() for k, v in network.state_dict().items()}}


def load_network(entry: dict) -> DeepStemNet:
    """The network of a checkpoint entry (weights as numpy arrays or tensors), in eval mode on the CPU."""
    network = build_model(asdict(DeepS1Config(**entry["config"])))
    network.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in entry["model"].items()})
    return network.eval()
