"""S2 training: data from S2 feature pickles, BCE on candidate pairs, epoch metrics."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, roc_auc_score

from stembb.s2.gnn import build_graph, collate_graphs

S2_COLUMNS = ("seq", "stem_bb_bps", "target_bps", "stem_bb_bps_features")
F1_THRESHOLDS = (0.3, 0.5, 0.7)


def graphs_from_frame(df: pd.DataFrame, k: int) -> list[dict]:
    """One graph per row; label 1 for candidates in ``target_bps``."""
    graphs = []
    for seq, cands, target, feats in zip(df["seq"], df["stem_bb_bps"], df["target_bps"], df["stem_bb_bps_features"]):
        cands = [tuple(p) for p in cands]
        target = {tuple(p) for p in target}
        graphs.append(build_graph(seq, cands, [feats[p] for p in cands], k, [p in target for p in cands]))
    return graphs


def batches(graphs: list[dict], batch_size: int, rng: np.random.Generator | None):
    order = rng.permutation(len(graphs)) if rng is not None else np.arange(len(graphs))
    for start in range(0, len(order), batch_size):
        yield collate_graphs([graphs[k] for k in order[start:start + batch_size]])


def s2_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy over the candidate pairs only (non-candidates have no logit)."""
    return F.binary_cross_entropy_with_logits(logits, labels)


def pair_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    both = 0 < labels.sum() < len(labels)
    out = {"auroc": roc_auc_score(labels, probs) if both else float("nan"),
           "auprc": average_precision_score(labels, probs) if both else float("nan")}
    for t in F1_THRESHOLDS:
        pred = probs > t
        tp = float((pred & (labels > 0)).sum())
        out[f"f1_at_{t}"] = 2 * tp / max(pred.sum() + labels.sum(), 1)
    return out


def run_epoch(model, graphs, device, batch_size, optimizer=None, rng=None, epoch: int = 0) -> dict[str, float]:
    """Train (with ``optimizer``) or evaluate over ``graphs``; loss, auROC, auPRC, F1s."""
    model.train(optimizer is not None)
    losses, probs, labels = [], [], []
    with torch.set_grad_enabled(optimizer is not None):
        for step, batch in enumerate(batches(graphs, batch_size, rng)):
            batch = {k: v.to(device) for k, v in batch.items()}
            if not len(batch["labels"]):
                continue
            logits = model(batch)
            loss = s2_loss(logits, batch["labels"])
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"non-finite S2 loss at epoch {epoch}, step {step}; lower --learning_rate")
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            losses.append((loss.item(), len(logits)))
            probs.append(torch.sigmoid(logits).detach().cpu().numpy())
            labels.append(batch["labels"].cpu().numpy())
    total = sum(n for _, n in losses)
    out = {"loss": sum(v * n for v, n in losses) / max(total, 1)}
    return out | pair_metrics(np.concatenate(probs or [np.zeros(0)]), np.concatenate(labels or [np.zeros(0)]))
