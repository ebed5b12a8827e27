"""Merging the stem boxes of several sampled structures into one S1 target.

A pixel of the S1 map encodes one box, so two different stem boxes that share a pixel
conflict. Rule: boxes are ranked by the number of samples that contain them (most first),
then by size (larger first), then by corner (smaller first); each box is kept unless it
shares a pixel with a box kept before it. The rule is deterministic, and prefers the stem
the ensemble supports most, so the target is the best-supported set of compatible stems.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

from stembb.structure import Box


def boxes_overlap(a: Box, b: Box) -> bool:
    """Whether two boxes share at least one pixel."""
    (ax, ay), (aw, ah), _ = a
    (bx, by), (bw, bh), _ = b
    return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah


def merge_stem_boxes(samples: Sequence[Sequence[Box]]) -> tuple[list[Box], list[int], int]:
    """Merge per-sample stem boxes.

    Returns the kept boxes (sorted by corner), how many samples contain each kept box
    (same order), and the number of distinct boxes dropped for conflicts.
    """
    counts = Counter(box for boxes in samples for box in set(boxes))
    ranked = sorted(counts, key=lambda b: (-counts[b], -b.size[0], b.corner))
    kept: list[Box] = []
    conflicts = 0
    for box in ranked:
        if any(boxes_overlap(box, k) for k in kept):
            conflicts += 1
        else:
            kept.append(box)
    kept.sort()
    return kept, [counts[b] for b in kept], conflicts
