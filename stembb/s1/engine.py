"""S1 losses, streaming metrics, and the plain ``train_one_epoch`` / ``evaluate`` loops.

Loss terms (docs/DESIGN.md, "Stage 1"): each averaged over the weighted pixels of an example, then over
the examples of the batch; the five are summed. The on/off loss weight of pixel (i, j)
is 0 below the diagonal and on padding, 1 in the unmasked region, ``mask_weight``
elsewhere; location and size are trained on stem pixels only.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from tqdm import tqdm

from stembb.distributed import synchronized_time
from stembb.s1.targets import unpack_targets

AUC_BINS = 1000
LOSS_NAMES = ("loss_stem_on", "loss_location_x", "loss_location_y", "loss_sm_size", "loss_sl_size")
# S1Metrics.counts, in order: summed over stem pixels, and the number of stem pixels.
COUNT_SLOTS = ("location_x_correct", "location_y_correct", "sm_size_correct", "sl_size_abs_error", "stem_pixels")
# A non-finite loss is looked for every step on CPU; on a GPU every this many steps, since
# reading the loss waits for the device (the run still stops, a few steps later).
FINITE_CHECK_EVERY = 25
WARMUP_STEPS = 3  # examples/s is timed after these (CUDA start-up, cudnn autotuning)


def on_weights(targets: dict[str, torch.Tensor], mask_weight: float) -> torch.Tensor:
    """``(B, L, L)`` weight of each pixel in the on/off loss."""
    n = targets["valid"].shape[-1]
    upper = torch.ones(n, n, dtype=torch.bool, device=targets["valid"].device).triu(1)
    region = targets["unmasked"].float() + (~targets["unmasked"]).float() * mask_weight
    return region * (targets["valid"] & upper)


def _example_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean per example, then mean over the examples that have any weight (0
    when none has); masked sums only, so no host-device synchronisation."""
    total = weights.sum(dim=(1, 2))
    per_example = (values * weights).sum(dim=(1, 2)) / total.clamp_min(1e-12)
    has = (total > 0).to(per_example.dtype)
    return (per_example * has).sum() / has.sum().clamp_min(1.0)


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
        self.counts = torch.zeros(len(COUNT_SLOTS), device=device, dtype=torch.float64)
        self.timed = [0, 0.0]  # examples and seconds of the training loop after warm-up (this rank)

    @torch.no_grad()
    def update(self, losses, outputs, targets, mask_weight: float) -> None:
        """Accumulate one batch on the device (masked sums and ``index_add_``: no
        host-device synchronisation)."""
        n = targets["valid"].shape[0]
        self.losses[:-1] += torch.stack([losses[k].detach().double() for k in LOSS_NAMES]) * n
        self.losses[-1] += n
        scored = (on_weights(targets, mask_weight) > 0).double()
        prob = torch.sigmoid(outputs["stem_on"][:, 0].float())
        bins = (prob * AUC_BINS).long().clamp_(0, AUC_BINS - 1) + targets["stem_on"].long() * AUC_BINS
        self.hist.view(-1).index_add_(0, bins.flatten(), scored.flatten())
        stem = targets["in_stem"]
        counts = [((outputs[name].argmax(1) == targets[name]) & stem).sum() for name in ("location_x", "location_y",
                                                                                        "sm_size")]
        counts.append(((outputs["sl_size"][:, 0].float() - targets["sl_size"]).abs() * stem).sum())
        counts.append(stem.sum())
        self.counts += torch.stack(counts).double()

    def all_reduce(self) -> None:
        for t in (self.losses, self.hist, self.counts):
            torch.distributed.all_reduce(t)

    def compute(self) -> dict[str, float]:
        n = max(self.losses[-1].item(), 1.0)
        out = {name: self.losses[k].item() / n for k, name in enumerate(LOSS_NAMES)}
        out["loss"] = sum(out[k] for k in LOSS_NAMES)
        out["stem_on_auroc"], out["stem_on_auprc"] = binned_auc(self.hist[0], self.hist[1])
        if self.timed[1] > 0:
            out["examples_per_s"] = self.timed[0] / self.timed[1]
        counts = dict(zip(COUNT_SLOTS, self.counts.tolist()))
        px = max(counts["stem_pixels"], 1.0)
        for slot, metric in (("location_x_correct", "location_x_acc"), ("location_y_correct", "location_y_acc"),
                             ("sm_size_correct", "sm_size_acc"), ("sl_size_abs_error", "sl_size_mae")):
            out[metric] = counts[slot] / px
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


def _to_device(x, packed, device):
    """A loader batch on ``device``: x, its targets unpacked there, and the lengths."""
    targets = unpack_targets(packed.to(device, non_blocking=True))
    return x.to(device, non_blocking=True), targets, targets["valid"][:, :, 0].sum(1)


def autocast_context(device, amp: str | None):
    """``torch.autocast`` for ``amp`` ('fp16' or 'bf16') on CUDA; a no-op otherwise."""
    if amp is None or device.type != "cuda":
        return nullcontext()
    return torch.autocast(device_type="cuda", dtype=torch.float16 if amp == "fp16" else torch.bfloat16)


def train_one_epoch(model, optimizer, loader, device, epoch: int, mask_weight: float,
                    scaler=None, show_progress: bool = True, amp: str | None = None) -> S1Metrics:
    """One pass over ``loader``. ``amp``: 'fp16' (with ``scaler``) or 'bf16' autocast on
    CUDA. Stops the run with FloatingPointError on a non-finite loss."""
    model.train()
    metrics = S1Metrics(device)
    autocast = autocast_context(device, amp or ("fp16" if scaler is not None else None))
    check_every = 1 if device.type == "cpu" else FINITE_CHECK_EVERY
    finite = torch.ones((), dtype=torch.bool, device=device)
    started = None
    for step, (x, packed) in enumerate(tqdm(loader, desc=f"epoch {epoch} train", disable=not show_progress)):
        if step == WARMUP_STEPS:
            started = synchronized_time(device)
        if started is not None:
            metrics.timed[0] += x.shape[0]
        x, targets, lengths = _to_device(x, packed, device)
        with autocast:
            outputs = model(x, lengths)
        losses = s1_losses(outputs, targets, mask_weight)
        loss = sum(losses.values())
        finite &= torch.isfinite(loss)
        if (step + 1) % check_every == 0 and not finite.item():
            raise FloatingPointError(
                f"non-finite loss at epoch {epoch}, step {step}"
                + (f" (or up to {check_every - 1} steps before)" if check_every > 1 else "") + ": "
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
    if started is not None:
        metrics.timed[1] = synchronized_time(device) - started
    if not finite.item():
        raise FloatingPointError(f"non-finite loss in the last steps of epoch {epoch}; lower --lr or check the data")
    return metrics


@torch.no_grad()
def evaluate(model, loader, device, mask_weight: float, show_progress: bool = True) -> S1Metrics:
    model.eval()
    metrics = S1Metrics(device)
    for x, packed in tqdm(loader, desc="validation", disable=not show_progress):
        x, targets, lengths = _to_device(x, packed, device)
        outputs = model(x, lengths)
        metrics.update(s1_losses(outputs, targets, mask_weight), outputs, targets, mask_weight)
    return metrics
