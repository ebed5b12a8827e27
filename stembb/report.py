"""End-to-end reports: reference records from a test pickle or structure files, per-
sequence base-pair scores, and summaries overall, per length bin, per family and per clan,
with family-macro averages (each family weighs the same, however many sequences it has)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from stembb.data.folding import fold, mea_structure
from stembb.data.formats import Record, read_references
from stembb.data.splits import SPLITS
from stembb.errors import InputError
from stembb.io import read_pickle
from stembb.metrics import pair_scores
from stembb.sequences import add_letters_arg, check_sequences
from stembb.structure import crossing_pairs, pairs_from_db, pairs_from_one_idx

LENGTH_BINS = (0, 50, 100, 150, 200, 300, 500, 10 ** 6)


def span_note(max_span: int | None) -> str:
    """What a row's method name adds when its pairs were limited to ``max_span`` apart."""
    return "" if max_span is None else f" (span {max_span})"


def rnafold_pairs(seq: str, method: str, max_span: int | None = None) -> list[tuple[int, int]]:
    """ViennaRNA's structure of ``seq`` by ``method`` ("MFE" or "MEA"), pairs at most
    ``max_span`` apart when given: the ViennaRNA rows of every evaluation script."""
    if method == "MFE":
        return pairs_from_db(fold(seq, partition=False, max_span=max_span).mfe_structure)
    return pairs_from_db(mea_structure(seq, max_span=max_span))


def load_records(data: Path | None, refs: Path | None, num: int | None = None,
                 split: str | None = None) -> list[Record]:
    """Reference records: the rows of a pickle (``data``; its ``one_idx`` structure, its
    ``family``/``clan``/``name`` columns when present, only the rows of ``split`` when
    given) or the files under ``refs``; the first ``num`` only."""
    if data is not None:
        df = read_pickle(data, first=None if split else num)
        if split is not None:
            if "split" not in df.columns:
                raise InputError(f"{data}: --split {split} given but the pickle has no split column")
            df = df[df["split"] == split].reset_index(drop=True)
            if df.empty:
                raise InputError(f"{data}: no row with split {split!r}")

        def column(name, default):
            return df[name].astype(str).tolist() if name in df.columns else [default(k) for k in range(len(df))]

        sizes = df["family_size"].tolist() if "family_size" in df.columns else [0] * len(df)
        records = [Record(name, seq.upper(), pairs_from_one_idx(idx), fam, clan, family_size=int(size))
                   for seq, idx, name, fam, clan, size in zip(df["seq"], df["one_idx"],
                                                              column("name", lambda k: f"row{k}"),
                                                              column("family", lambda k: ""),
                                                              column("clan", lambda k: ""), sizes)]
    else:
        records = read_references(refs)
    return records[:num] if num else records


def add_reference_args(p) -> None:
    """The flags that choose the reference structures of an evaluation script."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path,
                     help="test pickle (a generator's, or make_structure_dataset.py's: family/clan tables)")
    src.add_argument("--refs", type=Path, help="folder of BPSEQ/CT files, or FASTA with dot-bracket lines")
    p.add_argument("--split", choices=SPLITS, default=None,
                   help="only the rows of this split (pickles with a split column, e.g. --split test)")
    p.add_argument("--num", type=int, default=None, help="first N sequences only")
    p.add_argument("--max_length", type=int, default=500, help="longer sequences are skipped and counted")
    p.add_argument("--strict_length", action="store_true", help="a sequence longer than --max_length is an error")
    add_letters_arg(p)


def reference_records(args, log) -> list[Record]:
    """The records of ``--data`` or ``--refs`` (first ``--num``) to evaluate, checked as
    ``check_sequences`` checks a FASTA (letters outside ACGTU are noted and fold unpaired;
    their reference pairs are kept and scored); records longer than ``--max_length`` are skipped and counted, or, with
    ``--strict_length``, an error."""
    if args.split and args.refs:
        raise InputError("--split selects rows of a --data pickle; --refs files have no split")
    records = load_records(args.data, args.refs, args.num, args.split)
    kept = check_sequences(args.data or args.refs, records, args.max_length, skip_long=not args.strict_length,
                           strict_letters=args.strict_letters, log=log)
    if len(kept) < len(records):
        log.info("skipped %d of %d sequences longer than --max_length %d", len(records) - len(kept), len(records),
                 args.max_length)
    return kept


def score_row(index: int, rec: Record, method: str, pred, seconds: float) -> dict:
    """One per-sequence row: precision, recall, F1 (exact and with a one-position slip),
    and, for a pseudoknotted reference, ``f1_crossing``: the F1 of the predicted pairs
    that cross another predicted pair against the reference's crossing pairs (0 for a
    nested prediction; NaN for a nested reference). ``index`` is the record's position
    (names need not be unique)."""
    exact, slip = pair_scores(pred, rec.pairs), pair_scores(pred, rec.pairs, slip=1)
    ref_crossing = crossing_pairs(rec.pairs)
    crossing = pair_scores(crossing_pairs(pred), ref_crossing)["f1"] if ref_crossing else float("nan")
    return {"index": index, "name": rec.name, "family": rec.family, "clan": rec.clan, "length": len(rec.seq),
            "method": method, **exact, "f1_slip": slip["f1"], "pseudoknotted": bool(ref_crossing),
            "f1_crossing": crossing, "n_pred_pairs": len(pred), "n_ref_pairs": len(rec.pairs), "seconds": seconds}


def summarize(per_seq: pd.DataFrame) -> pd.DataFrame:
    """Mean scores per method (``f1_crossing`` over the pseudoknotted references, counted
    in ``n_pseudoknotted``): overall, per length bin and (when there are families) per
    family, per clan (families without one under their own accession) and the
    family-macro mean (group ``family_macro``: the mean of the per-family means), with the
    number of sequences and seconds per sequence."""
    bins = pd.cut(per_seq["length"], LENGTH_BINS, right=True)
    order = {str(c): k for k, c in enumerate(bins.cat.categories)}
    per_seq = per_seq.assign(length_bin=bins.astype(str)).sort_values("length_bin", key=lambda s: s.map(order),
                                                                      kind="stable")
    parts = [per_seq.assign(group="all", value="all")]
    parts.append(per_seq.assign(group="length", value=per_seq["length_bin"]))
    has_families = (per_seq["family"] != "").any()
    if has_families:
        parts.append(per_seq.assign(group="family", value=per_seq["family"]))
        clans = per_seq["clan"].where(per_seq["clan"] != "", per_seq["family"]) if "clan" in per_seq else None
        if clans is not None and (per_seq["clan"] != "").any():
            parts.append(per_seq.assign(group="clan", value=clans))
    table = pd.concat(parts).groupby(["group", "value", "method"], sort=False).agg(
        n=("f1", "size"), precision=("precision", "mean"), recall=("recall", "mean"), f1=("f1", "mean"),
        f1_slip=("f1_slip", "mean"), f1_crossing=("f1_crossing", "mean"), n_pseudoknotted=("pseudoknotted", "sum"),
        seconds_per_seq=("seconds", "mean")).reset_index()
    if has_families:
        fam = table[table["group"] == "family"]
        macro = fam.groupby("method", sort=False)[["precision", "recall", "f1", "f1_slip", "f1_crossing",
                                                   "seconds_per_seq"]].mean()
        sums = fam.groupby("method", sort=False)[["n", "n_pseudoknotted"]].sum()
        macro = macro.assign(group="family_macro", value="all", n=sums["n"], n_pseudoknotted=sums["n_pseudoknotted"])
        table = pd.concat([table, macro.reset_index()[table.columns]], ignore_index=True)
    return table
