"""Peers measured beside stembb, never on its prediction path: EternaFold's parameters
folded by LinearPartition (``linearpartition-unofficial``, requirements-eval.txt)."""
from __future__ import annotations

import re

from stembb.errors import InputError
from stembb.structure import pairs_from_db

NOT_ACGU = re.compile("[^ACGU]")
EVAL_REQUIREMENTS = "pip install -r requirements-eval.txt"


def eternafold_pairs(seq: str, beam: int = 100) -> list[tuple[int, int]]:
    """EternaFold's MEA structure of ``seq`` (LinearPartition, beam ``beam``; 0 is exact),
    as pairs. LinearPartition takes A, C, G, U alone: another letter (T read as U) is
    folded as A and its pairs dropped, so it is unpaired, as in stembb and RNAfold."""
    try:
        import linearpartition
    except ImportError:
        raise InputError(f"EternaFold rows need linearpartition-unofficial: {EVAL_REQUIREMENTS}") from None
    seq = seq.upper().replace("T", "U")
    unknown = {m.start() for m in NOT_ACGU.finditer(seq)}
    pred = linearpartition.partition(NOT_ACGU.sub("A", seq), mode="eterna", beamsize=beam)
    return [(i, j) for i, j in pairs_from_db(pred["structure"]) if i not in unknown and j not in unknown]
