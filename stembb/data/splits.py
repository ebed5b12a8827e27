"""Train / validation / test splits: by sequence for generated data, by clan (or family
where there is none) for real structures, and the ``split`` column that carries the
latter from ``s1_data_gen/make_structure_dataset.py`` to both trainers and the evaluation."""
from __future__ import annotations

import numpy as np
import pandas as pd

from stembb.errors import InputError

SPLITS = ("train", "val", "test")
# Never trained on, from any source (test families: rfam_seed SOURCES.md): 5S rRNA,
# tRNA / tmRNA and relatives, RNase P / MRP clans and the tRNA-like families.
PROTECTED_CLANS = frozenset({"CL00113", "CL00001", "CL00002"})
PROTECTED_FAMILIES = frozenset({"RF00233", "RF01075", "RF01077", "RF01084", "RF01085", "RF01088", "RF01101"})
PROTECTED_NAMES = ("5s_rrna", "5s_ribosomal", "trna", "tmrna", "rnasep", "rnase_p", "rnase-p")


def is_protected(family: str, clan: str, family_name: str) -> bool:
    """Whether a family belongs to the held-out-forever set (by clan, accession or name)."""
    name = family_name.lower() or family.lower()
    return (clan in PROTECTED_CLANS or family in PROTECTED_FAMILIES
            or any(name.startswith(p) or f"_{p}" in name for p in PROTECTED_NAMES))


def split_by_sequence(df: pd.DataFrame, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the training and validation sets. Rows that share a sequence (the
    samples of one segment) stay on one side; the split depends only on the data and seed."""
    seqs = df["seq"].to_numpy()
    unique = np.unique(seqs)
    rng = np.random.default_rng([seed, 17])
    n_val = int(round(val_fraction * len(unique)))
    val_seqs = set(unique[rng.permutation(len(unique))[:n_val]])
    is_val = np.fromiter((s in val_seqs for s in seqs), dtype=bool, count=len(seqs))
    return np.nonzero(~is_val)[0], np.nonzero(is_val)[0]


def train_val_rows(df: pd.DataFrame, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Training and validation row indices, and how they were chosen: the data's ``split``
    column when it has one (``test`` rows are never used), else ``split_by_sequence``."""
    if "split" not in df.columns:
        train, val = split_by_sequence(df, val_fraction, seed)
        return train, val, f"by sequence, seed {seed}"
    if df["split"].isna().any():
        raise InputError("some rows have no split value: do not mix pickles with and without a split column")
    split = df["split"].astype(str).to_numpy()
    unknown = sorted(set(split) - set(SPLITS))
    if unknown:
        raise InputError(f"split column holds {unknown}; expected {', '.join(SPLITS)}")
    return (np.nonzero(split == "train")[0], np.nonzero(split == "val")[0],
            f"the data's split column ({int((split == 'test').sum())} test rows left out)")


def parse_split_spec(flag: str, values: list[str]) -> float | set[str]:
    """``--val_families`` / ``--test_families``: one fraction in [0, 1) of the groups, or
    a list of family accessions, family names or clan ids."""
    if len(values) == 1:
        try:
            frac = float(values[0])
        except ValueError:
            return set(values)
        if not 0 <= frac < 1:
            raise InputError(f"{flag} must be a fraction in [0, 1) or a list of families/clans, got {values[0]}")
        return frac
    return set(values)


def group_split(meta: pd.DataFrame, val: float | set[str], test: float | set[str], seed: int,
                read: set[str] = frozenset(), log=None) -> np.ndarray:
    """``(N,)`` split labels for rows with ``family``, ``clan``, ``family_name``: whole groups
    (the clan, or the family where there is no clan) go to one side, so no family or clan
    is ever on two sides. Listed names pull their whole group; protected families
    (``is_protected``) always go to test, with a note on ``log`` for one listed for
    validation; fractions are of the remaining groups, drawn in a seeded order of the
    sorted group names. ``read``: the names of every record read, so that a listed name
    whose records a filter dropped is told apart from one the inputs never had."""
    group = np.where(meta["clan"] != "", meta["clan"], meta["family"]).astype(str)
    names = sorted(set(group))
    assigned: dict[str, str] = {}
    for side, spec in (("test", test), ("val", val)):
        if isinstance(spec, set):
            hit = meta["family"].isin(spec) | meta["family_name"].isin(spec) | meta["clan"].isin(spec)
            missing = spec - set(meta["family"]) - set(meta["family_name"]) - set(meta["clan"])
            if missing - set(read):
                raise InputError(f"--{side}_families: {sorted(missing - set(read))[:5]} not in the data")
            if missing:
                raise InputError(f"--{side}_families: every record of {sorted(missing)[:5]} was dropped by the "
                                 "filters (--len_min, --len_max, no base pair, duplicates)")
            for g in np.unique(group[hit.to_numpy()]):
                if assigned.setdefault(g, side) != side:
                    raise InputError(f"--val_families and --test_families both select group {g}")
    protected = [is_protected(f, c, n) for f, c, n in zip(meta["family"], meta["clan"], meta["family_name"])]
    for g in np.unique(group[np.array(protected, dtype=bool)]):
        if assigned.get(g) == "val" and log is not None:
            log.info("note: --val_families: group %s is held out forever (a protected family or clan), so it goes "
                     "to test, not validation", g)
        assigned[g] = "test"
    free = [names[k] for k in np.random.default_rng([seed, 29]).permutation(len(names)) if names[k] not in assigned]
    for side, spec in (("test", test), ("val", val)):
        if isinstance(spec, float):
            n = int(round(spec * len(names)))
            for g in free[:n]:
                assigned[g] = side
            free = free[n:]
    return np.array([assigned.get(g, "train") for g in group], dtype=object)
