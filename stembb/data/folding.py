"""Folding with the ViennaRNA Python bindings (``import RNA``), never a subprocess."""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

import RNA
from tqdm import tqdm

from stembb.errors import RunFailed, pool_worker_start
from stembb.structure import normalize_seq


WORKER_DIED = ("a folding worker process died (killed, or out of memory); nothing was written: rerun "
               "(the same --seed gives the same output), or use --workers 1")


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


def fold(seq: str, partition: bool = True, num_sample: int = 0, seed: int = 0, max_span: int | None = None) -> Folding:
    """Fold ``seq`` (T read as U), with pairs at most ``max_span`` apart when given.

    With ``partition``, also the partition function (Boltzmann factors rescaled with the
    MFE to avoid overflow), the MFE structure's frequency and the ensemble diversity.
    ``num_sample`` > 0 draws that many non-redundant stochastic samples (fewer when the
    ensemble has fewer distinct structures), with ViennaRNA's generator seeded by ``seed``.
    """
    fc, structure, fe = _mfe(seq, max_span)
    out = Folding(structure, fe)
    if partition or num_sample:
        _partition(fc, fe)
        out.mfe_freq = float(fc.pr_structure(structure))
        out.ens_div = float(fc.mean_bp_distance())
    if num_sample:
        out.samples = _samples(fc, num_sample, seed)
    return out


def mea_structure(seq: str, gamma: float = 1.0, max_span: int | None = None) -> str:
    """ViennaRNA's maximum-expected-accuracy structure (dot-bracket) at ``gamma``, from
    the partition function of its default energy model (pairs at most ``max_span``
    apart when given)."""
    fc, _, fe = _mfe(seq, max_span)
    _partition(fc, fe)
    return fc.MEA(gamma)[0]


def sampled_energies(seq: str, num_sample: int, seed: int) -> tuple[list[str], list[float]]:
    """The MFE structure of ``seq`` and its distinct Boltzmann samples among ``num_sample``
    drawn as ``fold`` draws them (dot-bracket, the MFE structure first and once), with
    their free energies (kcal/mol)."""
    fc, structure, fe = _mfe(seq)
    _partition(fc, fe)
    structures = [structure] + [s for s in _samples(fc, num_sample, seed) if s != structure]
    return structures, [fe] + [float(fc.eval_structure(s)) for s in structures[1:]]


def sampled_energies_of(seqs: list[str], num_sample: int, seed: int, workers: int = 1,
                        progress: bool = True) -> list[tuple[list[str], list[float]]]:
    """``sampled_energies`` of every sequence, the k-th drawn with ``sampling_seed(seed,
    k)`` (the same output for any number of ``workers`` processes)."""
    tasks = [(seq, num_sample, sampling_seed(seed, k)) for k, seq in enumerate(seqs)]
    bar = dict(total=len(tasks), desc="energies of samples", disable=not progress)
    if workers <= 1:
        return [sampled_energies(*task) for task in tqdm(tasks, **bar)]
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                 initializer=pool_worker_start) as pool:
            return list(tqdm(pool.map(_sampled_energies_task, tasks, chunksize=16), **bar))
    except BrokenProcessPool:
        raise RunFailed(WORKER_DIED) from None


def _sampled_energies_task(task: tuple[str, int, int]) -> tuple[list[str], list[float]]:
    return sampled_energies(*task)


def _mfe(seq: str, max_span: int | None = None) -> tuple[RNA.fold_compound, str, float]:
    md = RNA.md()
    md.uniq_ML = 1  # non-redundant sampling silently returns nothing without it
    if max_span is not None:
        md.max_bp_span = max_span
    fc = RNA.fold_compound(normalize_seq(seq), md)
    structure, fe = fc.mfe()
    return fc, structure, float(fe)


def _partition(fc: RNA.fold_compound, fe: float) -> None:
    fc.exp_params_rescale(fe)
    fc.pf()


def _samples(fc: RNA.fold_compound, num_sample: int, seed: int) -> list[str]:
    RNA.init_rand(seed)
    return list(fc.pbacktrack(num_sample, RNA.PBACKTRACK_NON_REDUNDANT))
