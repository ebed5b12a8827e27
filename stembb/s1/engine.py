"""S1 losses, streaming metrics, and the plain ``train_one_epoch`` / ``evaluate`` loops.

Loss terms (docs/DESIGN.md, "Stage 1"): each averaged over the weighted pixels of an example, then over
the examples of the batch; the five are summed. The on/off loss weight of pixel (i, j)
is 0 below the diagonal and on padding, 1 in the unmasked region, ``mask_weight``
elsewhere; location and size are trained on stem pixels only.
"""
from __future__ import annotations

import math
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from tqdm import tqdm

AUC_BINS = 1000
LOSS_NAMES = ("loss_stem_on", "loss_location_x", "loss_location_y", "loss_sm_size", "loss_sl_size")


def on_weights(targets: dict[str, torch.Tensor], mask_weight: float) -> torch.Tensor:
    """``(B, L, L)`` weight of each pixel in the on/off loss."""
    n = targets["valid"].shape[-1]
    upper = torch.ones(n, n, dtype=torch.bool, device=targets["valid"].device).triu(1)
    region = targets["unmasked"].float() + (~targets["unmasked"]).float() * mask_weight
    return region * (targets["valid"] & upper)


def _example_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean per example, then mean over the examples that have any weight."""
    total = weights.sum(dim=(1, 2))
    per_example = (values * weights).sum(dim=(1, 2)) / total.clamp_min(1e-12)
    has = total > 0
    return per_example[has].mean() if has.any() else values.sum() * 0.0


def s1_losses(outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
              mask_weight: float) -> dict[str, torch.Tensor]:
    """Named loss terms (scalars) of one batch."""
    stem = targets["in_stem"].float()
    bce = F.binary_cross_entropy_with_logits(outputs["stem_on"][:, 0].float(), targets["stem_on"], reduction="none")
    terms = {"loss_stem_on": _example_mean(bce, on_weights(targets, mask_weight))}
    for name in ("location_x", "location_y", "sm_size"):
        ce = F.cross_entropy(outputs[name].float(), targets[name], reduction="none")
        terms[f"loss_{name}"] = _example_mean(ce, stem)
    l1 = (outputs["sl_size"][:, 0].float() - targets["sl_size"]).abs()
    terms["loss_sl_size"] = _example_mean(l1, stem)
    return terms


class S1Metrics:
    """Streaming epoch metrics: mean loss terms, stem_on auROC/auPRC (from probability
    histograms of AUC_BINS bins), location/size accuracy and scalar-size MAE on stem
    pixels. ``all_reduce`` sums across ranks before ``compute``."""

    def __init__(self, device):
        self.losses = torch.zeros(len(LOSS_NAMES) + 1, device=device, dtype=torch.float64)  # + examples
        self.hist = torch.zeros(2, AUC_BINS, device=device, dtype=torch.float64)  # negatives, positives
        self.counts = torch.zeros(5, device=device, dtype=torch.float64)  # x, y, size correct; |err|; stem px

    @torch.no_grad()
    def update(self, losses, outputs, targets, mask_weight: float) -> None:
        n = targets["valid"].shape[0]
        self.losses[:-1] += torch.stack([losses[k].detach().double() for k in LOSS_NAMES]) * n
        self.losses[-1] += n
        scored = on_weights(targets, mask_weight) > 0
        prob = torch.sigmoid(outputs["stem_on"][:, 0].float())[scored]
        label = targets["stem_on"][scored].long()
        bins = (prob * AUC_BINS).long().clamp_(0, AUC_BINS - 1)
        self.hist += torch.bincount(label * AUC_BINS + bins, minlength=2 * AUC_BINS).view(2, AUC_BINS).double()
        stem = targets["in_stem"]
        for k, name in enumerate(("location_x", "location_y", "sm_size")):
            self.counts[k] += (outputs[name].argmax(1)[stem] == targets[name][stem]).sum()
        self.counts[3] += (outputs["sl_size"][:, 0].float()[stem] - targets["sl_size"][stem]).abs().sum()
        self.counts[4] += stem.sum()

    def all_reduce(self) -> None:
        for t in (self.losses, self.hist, self.counts):
            torch.distributed.all_reduce(t)

    def compute(self) -> dict[str, float]:
        n = max(self.losses[-1].item(), 1.0)
        out = {name: self.losses[k].item() / n for k, name in enumerate(LOSS_NAMES)}
        out["loss"] = sum(out[k] for k in LOSS_NAMES)
        out["stem_on_auroc"], out["stem_on_auprc"] = binned_auc(self.hist[0], self.hist[1])
        px = max(self.counts[4].item(), 1.0)
        out["location_x_acc"] = self.counts[0].item() / px
        out["location_y_acc"] = self.counts[1].item() / px
        out["sm_size_acc"] = self.counts[2].item() / px
        out["sl_size_mae"] = self.counts[3].item() / px
        return out


def binned_auc(neg: torch.Tensor, pos: torch.Tensor) -> tuple[float, float]:
    """auROC and auPRC (average precision) from per-bin counts of negatives and positives,
    thresholds at the bin edges (exact up to ties within a bin)."""
    P, N = pos.sum().item(), neg.sum().item()
    if P == 0 or N == 0:
        return float("nan"), float("nan")
    tp = torch.cumsum(pos.flip(0), 0)
    fp = torch.cumsum(neg.flip(0), 0)
    tpr = torch.cat([tp.new_zeros(1), tp / P])
    fpr = torch.cat([fp.new_zeros(1), fp / N])
    auroc = torch.trapezoid(tpr, fpr).item()
    precision = tp / (tp + fp).clamp_min(1e-12)
    auprc = ((tpr[1:] - tpr[:-1]) * precision).sum().item()
    return auroc, auprc


def _to_device(x, targets, device):
    return x.to(device, non_blocking=True), {k: v.to(device, non_blocking=True) for k, v in targets.items()}


def train_one_epoch(model, optimizer, loader, device, epoch: int, mask_weight: float,
                    scaler=None, show_progress: bool = True) -> S1Metrics:
    """One pass over ``loader``; stops the run with FloatingPointError on a non-finite loss."""
    model.train()
    metrics = S1Metrics(device)
    autocast = torch.autocast(device_type=device.type) if scaler is not None else nullcontext()
    for step, (x, targets) in enumerate(tqdm(loader, desc=f"epoch {epoch} train", disable=not show_progress)):
        x, targets = _to_device(x, targets, device)
        with autocast:
            outputs = model(x)
        losses = s1_losses(outputs, targets, mask_weight)
        loss = sum(losses.values())
        if not math.isfinite(loss.item()):
            raise FloatingPointError(
                f"non-finite loss at epoch {epoch}, step {step}: "
                + ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items()) + "; lower --lr or check the data")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        metrics.update(losses, outputs, targets, mask_weight)
    return metrics


@torch.no_grad()
def evaluate(model, loader, device, mask_weight: float, show_progress: bool = True) -> S1Metrics:
    model.eval()
    metrics = S1Metrics(device)
    for x, targets in tqdm(loader, desc="validation", disable=not show_progress):
        x, targets = _to_device(x, targets, device)
        outputs = model(x)
        metrics.update(s1_losses(outputs, targets, mask_weight), outputs, targets, mask_weight)
    return metrics
