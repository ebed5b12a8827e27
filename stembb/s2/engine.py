"""S2 training and scoring, shared by both S2 networks (docs/DESIGN.md, "Stage 2").

An S2 network scores *items*: candidate pairs (the graph network, ``stembb.s2.gnn``) or
distinct S1 boxes (the box transformer, ``stembb.s2.boxnet``). ``S2_MODELS`` names,
per network, the functions the trainer and the predictor need: how to build it, which
pickle columns it reads, how to turn a row (training) or S1 proposals (prediction) into
an example, how to batch examples, and how its item logits become one structure.
Every example maps its items to candidate pairs (``pairs``, ``entry_pair``,
``entry_item``): a pair takes the largest logit of its items (``pair_max``).

Decoding: the box transformer assembles structures with its learned loop terms
(``stembb.grammar.assemble``; pair scores = logits + log gamma); the graph network uses the
maximum-expected-accuracy DP on probabilities (``stembb.grammar.decode``; gain
``(gamma + 1) p - 1``). Either way larger ``gamma`` favours recall, and after training
``gamma`` is chosen on the validation split as the value with the best mean base-pair F1
of the decoded structures (``calibrate_gamma``).

Training is binary cross-entropy over items, plus, for the box transformer, optionally a
structured margin loss on the assembled structure (``structured_hinge``). The box
transformer's loop terms are by default fitted to ViennaRNA energies by least squares
(``stembb.grammar.energy_fit``) and then fixed; the margin loss (``fit_terms`` and
``--struct_weight``) is how they learn from structures alone.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from stembb.metrics import pair_scores
from stembb.s1.predict import Proposals
from stembb.s2 import boxnet, gnn
from stembb.s2.candidates import box_table, pair_features
from stembb.grammar.assemble import TERM_SHAPES, assemble, loop_counts
from stembb.grammar.terms import structure_score
from stembb.grammar.decode import decode_structure
from stembb.structure import pairs_from_one_idx

# fine near 1: for energy-fitted loop terms log(gamma) is a bonus per pair in kcal/mol
GAMMA_GRID = (0.25, 0.5, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0)
PAIR_WEIGHT_GRID = (0.0, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
F1_THRESHOLDS = (0.3, 0.5, 0.7)


@dataclass(frozen=True)
class S2Model:
    """What the trainer and the predictor need to know of one S2 network."""

    kind: str  # checkpoint kind
    columns: tuple[str, ...]  # pickle columns it reads
    config_keys: tuple[str, ...]  # hyperparameters (flags of the same name)
    build: Callable  # config dict -> nn.Module
    from_row: Callable  # (row dict, config) -> example with labels
    from_proposals: Callable  # (seq, Proposals, config) -> example, or None without candidates
    collate: Callable  # examples -> batch dict of tensors (flat ``labels`` when all have them)
    n_items: Callable  # example -> number of scored items
    decode: Callable  # (model, example, item logits, gamma) -> sorted pairs of one valid structure
    uses_logits: Callable  # model -> whether decode's result depends on the item logits


def _with_identity_pair_map(graph: dict) -> dict:
    """A graph's items are its candidate pairs: each is its own pair (see ``pair_max``)."""
    n = len(graph["pairs"])
    return graph | {"entry_pair": np.arange(n), "entry_item": np.arange(n)}


def _gnn_from_row(row: dict, config: dict) -> dict:
    cands = [tuple(p) for p in row["stem_bb_bps"]]
    ref = set(pairs_from_one_idx(row["one_idx"]))
    target = {tuple(p) for p in row["target_bps"]}
    feats = row["stem_bb_bps_features"]
    graph = gnn.build_graph(row["seq"], cands, [feats[p] for p in cands], config["kmer"], [p in target for p in cands])
    return _with_identity_pair_map(graph) | {"pair_labels": np.array([p in ref for p in cands], dtype=bool),
                                             "seq": row["seq"]}


def _gnn_from_proposals(seq: str, proposals: Proposals, config: dict):
    features = pair_features(proposals)
    if not features:
        return None
    cands = list(features)
    return _with_identity_pair_map(gnn.build_graph(seq, cands, [features[p] for p in cands], config["kmer"])) | {
        "seq": seq}


def _box_from_proposals(seq: str, proposals: Proposals, config: dict):
    return boxnet.box_example(seq, boxnet.top_boxes(box_table(proposals), config["max_boxes"])) if len(proposals) else None


def pair_max(example: dict, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(pairs (P, 2), (P,))``: each candidate pair of an example with the largest of the
    ``values`` (one per item) of the items that contain it."""
    best = np.full(len(example["pairs"]), -np.inf)
    np.maximum.at(best, example["entry_pair"], np.asarray(values, dtype=float)[example["entry_item"]])
    return np.asarray(example["pairs"]), best


def _decode_mea(model, example: dict, logits: np.ndarray, gamma: float) -> list[tuple[int, int]]:
    pairs, best = pair_max(example, logits)
    return decode_structure(len(example["seq"]), pairs, 1 / (1 + np.exp(-best)), gamma, example["seq"])


def _decode_assemble(model, example: dict, logits: np.ndarray, gamma: float) -> list[tuple[int, int]]:
    pairs, best = pair_max(example, logits)
    terms = model.terms.numpy()
    return assemble(example["seq"], pairs, terms["pair_weight"] * best + terms["pair_bias"] + math.log(gamma), terms)


S2_MODELS = {
    "box": S2Model(
        kind=boxnet.KIND, columns=("seq", "one_idx", "stem_bb_boxes"),
        config_keys=tuple(asdict(boxnet.BoxNetConfig())), build=boxnet.build_boxnet,
        from_row=lambda row, config: boxnet.box_example(
            row["seq"], boxnet.top_boxes(row["stem_bb_boxes"], config["max_boxes"]), pairs_from_one_idx(row["one_idx"])),
        from_proposals=_box_from_proposals, collate=boxnet.collate_boxes, n_items=lambda ex: len(ex["numeric"]),
        decode=_decode_assemble, uses_logits=lambda model: model.terms.pair_weight.item() != 0.0),
    "gnn": S2Model(
        kind=gnn.KIND, columns=("seq", "one_idx", "stem_bb_bps", "target_bps", "stem_bb_bps_features"),
        config_keys=gnn.S2_CONFIG_KEYS, build=gnn.build_s2_model, from_row=_gnn_from_row,
        from_proposals=_gnn_from_proposals, collate=gnn.collate_graphs, n_items=lambda ex: len(ex["pairs"]),
        decode=_decode_mea, uses_logits=lambda model: True),
}
S2_KINDS = {m.kind: name for name, m in S2_MODELS.items()}


def item_slices(spec: S2Model, examples: list[dict], idx) -> list[tuple[int, slice]]:
    """For the examples ``idx`` batched together: each one's index and the slice of its
    items in the batch's flat logits (the networks return them in example order)."""
    bounds = np.cumsum([0] + [spec.n_items(examples[k]) for k in idx])
    return [(k, slice(a, b)) for k, a, b in zip(idx, bounds[:-1], bounds[1:])]


def structured_hinge(logits: torch.Tensor, example: dict, terms) -> torch.Tensor:
    """Margin loss of the assembled structure (``logits``: the example's item logits;
    ``terms``: the model's ``LoopTerms``).

    A pair's score is ``pair_weight`` x the largest logit of the items containing it +
    ``pair_bias``. The loss-augmented structure (pair scores + 1 off the reference, - 1
    on it) must score at least its Hamming distance below the reference pairs among the
    candidates: ``max(0, S(pred) + distance - S(reference)) / |reference|``.
    """
    pairs = np.asarray(example["pairs"])
    pair_logit = torch.full((len(pairs),), -1e4, device=logits.device, dtype=logits.dtype).scatter_reduce(
        0, torch.as_tensor(example["entry_pair"], device=logits.device),
        logits[torch.as_tensor(example["entry_item"], device=logits.device)], "amax")
    unary = terms.pair_weight * pair_logit + terms.pair_bias
    pred, reference, distance = loss_augmented(example, unary.detach().double().cpu().numpy(), terms.numpy())
    index = {p: k for k, p in enumerate(map(tuple, pairs.tolist()))}
    margin = (structure_score(example["seq"], pred, index, unary, terms) + distance
              - structure_score(example["seq"], reference, index, unary, terms))
    return torch.clamp(margin, min=0) / max(len(reference), 1)


def loss_augmented(example: dict, unary: np.ndarray, terms: dict[str, np.ndarray]) -> tuple[list, list, int]:
    """``(pred, reference, distance)``: the structure assembled with the pair scores
    ``unary`` (P,) + 1 off the reference and - 1 on it, the reference pairs among the
    candidates, and the Hamming distance between the two."""
    pairs = np.asarray(example["pairs"])
    gold = np.asarray(example["pair_labels"], dtype=bool)
    pred = assemble(example["seq"], pairs, unary + np.where(gold, -1.0, 1.0), terms)
    reference = [tuple(p) for p in pairs[gold].tolist()]
    return pred, reference, len(set(pred) ^ set(reference))


def fit_terms(model, examples: list[dict], epochs: int, lr: float, batch_size: int, seed: int,
              on_epoch: Callable[[int, float], None] | None = None) -> None:
    """Fit the box model's loop terms and ``pair_bias`` alone, the network unused (every
    candidate pair scores ``pair_bias``; ``pair_weight`` is set to 0 and kept there): the
    mean ``structured_hinge`` over batches of ``examples``, Adam at ``lr`` decayed along a
    half cosine. Only the dynamic program runs, so each epoch costs a small fraction of
    a network epoch; the network's logits then enter at ``pair_weight`` 0 and grow as
    they earn it. ``on_epoch(epoch, mean loss)`` after each epoch."""
    terms = model.terms
    with torch.no_grad():
        terms.pair_weight.zero_()
    optimizer = torch.optim.Adam([p for name, p in terms.named_parameters() if name != "pair_weight"], lr)
    rng = np.random.default_rng([seed, 1 << 20])
    for epoch in range(epochs):
        for group in optimizer.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
        total = 0.0
        for idx in np.array_split(rng.permutation(len(examples)), max(len(examples) // batch_size, 1)):
            loss = _terms_hinge([examples[k] for k in idx], terms)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"non-finite loop-term loss at epoch {epoch}; lower --terms_lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        if on_epoch is not None:
            on_epoch(epoch, total / max(len(examples), 1))


def _terms_hinge(examples: list[dict], terms) -> torch.Tensor:
    """Mean ``structured_hinge`` of ``examples`` with every pair scoring ``pair_bias``,
    written with ``loop_counts``: S(pred) - S(reference) is linear in the terms, so the
    batch's margins are one matrix product per loop-term table."""
    theta, bias = terms.numpy(), float(terms.pair_bias.detach())
    diffs, n_pairs, distances, n_refs = {name: [] for name in TERM_SHAPES}, [], [], []
    for example in examples:
        pred, reference, distance = loss_augmented(example, np.full(len(example["pairs"]), bias), theta)
        (pred_pairs, pred_counts), (ref_pairs, ref_counts) = (loop_counts(example["seq"], y) for y in (pred, reference))
        for name in diffs:
            diffs[name].append(pred_counts[name] - ref_counts[name])
        n_pairs.append(len(pred_pairs) - len(ref_pairs))
        distances.append(distance)
        n_refs.append(max(len(ref_pairs), 1))
    like = terms.pair_bias
    margin = terms.pair_bias * torch.as_tensor(n_pairs, dtype=like.dtype) + torch.as_tensor(distances, dtype=like.dtype)
    for name, rows in diffs.items():
        param = getattr(terms, name)
        margin = margin + torch.as_tensor(np.stack(rows), dtype=param.dtype, device=param.device) @ param.flatten()
    return (torch.clamp(margin, min=0) / torch.as_tensor(n_refs, dtype=like.dtype)).mean()


def size_batches(sizes, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Batches of example indices of similar size (padding of the box transformer grows
    with the largest example). With ``rng``: sizes are sorted within shuffled chunks of
    50 batches and the batches shuffled; without: in size order."""
    sizes = np.asarray(sizes)
    if rng is None:
        order = np.argsort(sizes, kind="stable")
    else:
        order = rng.permutation(len(sizes))
        chunk = 50 * batch_size
        order = np.concatenate([c[np.argsort(sizes[c], kind="stable")] for c in np.split(order, range(chunk, len(order), chunk))]
                               or [order])
    out = [order[k:k + batch_size] for k in range(0, len(order), batch_size)]
    if rng is not None:
        out = [out[k] for k in rng.permutation(len(out))]
    return out


def item_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """auROC, auPRC and F1 at a few probability thresholds over scored items."""
    from sklearn.metrics import average_precision_score, roc_auc_score  # training only: kept off the import

    both = 0 < labels.sum() < len(labels)
    out = {"auroc": float(roc_auc_score(labels, probs)) if both else float("nan"),
           "auprc": float(average_precision_score(labels, probs)) if both else float("nan")}
    for t in F1_THRESHOLDS:
        pred = probs > t
        tp = float((pred & (labels > 0)).sum())
        out[f"f1_at_{t}"] = 2 * tp / max(float(pred.sum() + labels.sum()), 1.0)
    return out


def run_epoch(model, spec: S2Model, examples: list[dict], device, batch_size: int, optimizer=None,
              rng=None, epoch: int = 0, pos_weight: float = 1.0,
              struct_weight: float = 0.0) -> tuple[dict[str, float], list[np.ndarray]]:
    """Train (with ``optimizer``) or score ``examples``: the epoch's loss and item metrics,
    and each example's item logits (in example order).

    The loss is BCE over items, plus, when training with ``struct_weight`` > 0, that
    weight times the mean ``structured_hinge`` of the batch's examples."""
    model.train(optimizer is not None)
    total, n_items = 0.0, 0
    logits_out: list = [None] * len(examples)
    weight = torch.tensor(pos_weight, device=device)
    with torch.set_grad_enabled(optimizer is not None):
        for step, idx in enumerate(size_batches([spec.n_items(e) for e in examples], batch_size, rng)):
            batch = {k: v.to(device) for k, v in spec.collate([examples[k] for k in idx]).items()}
            logits = model(batch)
            if not len(logits):
                continue
            loss = F.binary_cross_entropy_with_logits(logits, batch["labels"], pos_weight=weight)
            slices = item_slices(spec, examples, idx)
            if optimizer is not None and struct_weight > 0:
                hinge = [structured_hinge(logits[items], examples[k], model.terms)
                         for k, items in slices if items.stop > items.start]
                loss = loss + struct_weight * torch.stack(hinge).mean()
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"non-finite S2 loss at epoch {epoch}, step {step}; lower --learning_rate")
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            total += loss.item() * len(logits)
            n_items += len(logits)
            flat = logits.detach().double().cpu().numpy()
            for k, items in slices:
                logits_out[k] = flat[items]
    labels = np.concatenate([e["labels"].numpy() if torch.is_tensor(e["labels"]) else e["labels"] for e in examples]
                            or [np.zeros(0)])
    flat = np.concatenate([x if x is not None else np.zeros(spec.n_items(e)) for x, e in zip(logits_out, examples)]
                          or [np.zeros(0)])
    return {"loss": total / max(n_items, 1)} | item_metrics(1 / (1 + np.exp(-flat)), labels), logits_out


def decoded_f1(model, spec: S2Model, examples, logits, refs, gamma: float) -> float:
    """Mean base-pair F1 of the structures decoded at ``gamma`` against ``refs``."""
    f1 = [pair_scores(spec.decode(model, ex, x, gamma), ref)["f1"] for ex, x, ref in zip(examples, logits, refs)]
    return float(np.mean(f1)) if f1 else float("nan")


def calibrate_gamma(model, spec: S2Model, examples, logits, refs,
                    grid=GAMMA_GRID) -> tuple[float, dict[float, float]]:
    """The ``gamma`` of ``grid`` with the best mean decoded F1 (the smallest among ties),
    and the F1 of every value tried."""
    scores = {g: decoded_f1(model, spec, examples, logits, refs, g) for g in grid}
    best = max(grid, key=lambda g: (scores[g], -g))
    return best, scores


def calibrate_pair_weight(model, spec: S2Model, examples, logits, refs,
                          grid=PAIR_WEIGHT_GRID) -> tuple[float, dict[float, float]]:
    """For fixed loop terms: the weight of the network's logits in the pair score
    (``model.terms.pair_weight``, set to the result) of ``grid`` with the best mean decoded
    F1 at gamma 1 (the smallest among ties: 0 when the logits do not help), and the F1 of
    every value tried."""
    scores = {}
    for weight in grid:
        with torch.no_grad():
            model.terms.pair_weight.fill_(weight)
        scores[weight] = decoded_f1(model, spec, examples, logits, refs, 1.0)
    best = max(grid, key=lambda w: (scores[w], -w))
    with torch.no_grad():
        model.terms.pair_weight.fill_(best)
    return best, scores
