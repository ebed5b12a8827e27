"""The Python interface, like ViennaRNA's ``RNA.fold``:

    import stembb
    structure, energy = stembb.fold("GGGGAAACCCC")      # the shipped model
    predictor = stembb.load_predictor()                 # reusable, folds many in batches
    structures = predictor.predict(["GGGGAAACCCC", "ACGUACGU"])
    long_rna = stembb.load_predictor(max_span=300)      # pairs at most 300 apart: memory linear in length
    whole = stembb.load_predictor(beam=100)             # whole long RNAs by beam search: linear time and memory
    knotted = stembb.load_predictor(pseudoknots=True)   # stems crossing the nested structure added

``energy`` is the structure's score as a pseudo free energy in kcal/mol (``-kT * S``)
for a grammar model, ``None`` for the two-stage box and graph models. The grammar model
folds with numpy and compiled loops; torch is imported only for a model that runs S1.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from stembb.pipeline import (S1_IF_READ, SHIPPED_S2, Predictor, predictor_from_checkpoints, set_beam,
                             set_max_span)
from stembb.errors import InputError
from stembb.sequences import check_sequence_list
from stembb.structure import db_from_pairs, normalize_seq


def load_predictor(s1_model: Path | None | str = S1_IF_READ, s2_model: Path = SHIPPED_S2,
                   device: str | None = None, max_span: int | None = None, pseudoknots: bool = False,
                   beam: int = 0) -> Predictor:
    """A predictor of two checkpoints (default: the shipped model, ``models/``; S1 only
    when the S2 model reads it) on ``device`` (default: CUDA when present, for S1 and
    the box models); with ``max_span`` (grammar models), bases pair at most that far apart;
    with ``pseudoknots`` (grammar models), stems crossing the nested structure are added
    (``stembb.grammar.pseudoknots``); with ``beam`` (grammar models without S1), pair
    probabilities come from a beam search keeping that many states of each kind per base
    (``stembb.grammar.beam``; 100 is the usual setting, 0 exact)."""
    predictor = predictor_from_checkpoints(s1_model, s2_model, device)
    if predictor.is_grammar:
        predictor.span_hint = "pass a smaller max_span: stembb.load_predictor(max_span=300)"
    if max_span is not None:
        set_max_span(predictor, max_span, "max_span", s2_model)
    if beam:
        set_beam(predictor, beam, "beam", s2_model)
    if pseudoknots:
        if not predictor.is_grammar:
            raise InputError(f"pseudoknots: the layer is for grammar models; {s2_model} is not one")
        predictor.decoder = predictor.decoder | {"pseudoknots": True}
    return predictor


@lru_cache(maxsize=1)
def _shipped() -> Predictor:
    return load_predictor()


def fold(seq: str) -> tuple[str, float | None]:
    """``(dot-bracket structure, energy)`` of one sequence with the shipped model.
    Letters outside ACGTU fold as bases that pair with nothing (a UserWarning says
    so); one-line InputError for an empty sequence or a character that is not a letter
    (``stembb.sequences.letter_problems``); TypeError for anything but a str."""
    if not isinstance(seq, str):
        raise TypeError(f"stembb.fold: takes a sequence as a str, got {type(seq).__name__}")
    seq = normalize_seq(seq.strip())
    check_sequence_list([seq], "stembb.fold")
    predictor = _shipped()
    if predictor.is_grammar:
        structures, _, energies = predictor.fold_checked([seq])
        return db_from_pairs(structures[0], len(seq)), energies[0]
    return db_from_pairs(predictor.predict_checked([seq])[0], len(seq)), None
