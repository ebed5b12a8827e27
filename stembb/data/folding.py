"""Folding with the ViennaRNA Python bindings (``import RNA``), never a subprocess."""
from __future__ import annotations

from dataclasses import dataclass, field

import RNA

from stembb.structure import normalize_seq


@dataclass
class Folding:
    """MFE structure (dot-bracket), free energy (kcal/mol), the MFE structure's ensemble
    frequency, ensemble diversity (mean base-pair distance) and unique samples."""

    mfe_structure: str
    fe: float
    mfe_freq: float = float("nan")
    ens_div: float = float("nan")
    samples: list[str] = field(default_factory=list)


def sampling_seed(seed: int, index: int) -> int:
    """A 31-bit seed for ViennaRNA's generator from the run seed and a task index
    (a splitmix64 step), so a sequence's samples do not depend on which worker folds it."""
    z = (seed * 0x9E3779B97F4A7C15 + (index + 1) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) & 0x7FFFFFFF


def fold(seq: str, partition: bool = True, num_sample: int = 0, seed: int = 0) -> Folding:
    """Fold ``seq`` (T read as U).

    With ``partition``, also the partition function (Boltzmann factors rescaled with the
    MFE to avoid overflow), the MFE structure's frequency and the ensemble diversity.
    ``num_sample`` > 0 draws that many non-redundant stochastic samples (fewer when the
    ensemble has fewer distinct structures), with ViennaRNA's generator seeded by ``seed``.
    """
    md = RNA.md()
    md.uniq_ML = 1  # non-redundant sampling silently returns nothing without it
    fc = RNA.fold_compound(normalize_seq(seq), md)
    structure, fe = fc.mfe()
    out = Folding(structure, float(fe))
    if partition or num_sample:
        fc.exp_params_rescale(fe)
        fc.pf()
        out.mfe_freq = float(fc.pr_structure(structure))
        out.ens_div = float(fc.mean_bp_distance())
    if num_sample:
        RNA.init_rand(seed)
        out.samples = list(fc.pbacktrack(num_sample, RNA.PBACKTRACK_NON_REDUNDANT))
    return out
