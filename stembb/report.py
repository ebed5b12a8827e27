"""End-to-end reports: reference records from a test pickle or structure files, per-
sequence base-pair scores, and summaries overall, per length bin and per family."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from stembb.data.formats import Record, read_references
from stembb.io import read_pickle
from stembb.metrics import pair_scores
from stembb.pipeline import check_sequences
from stembb.structure import pairs_from_one_idx

LENGTH_BINS = (0, 50, 100, 150, 200, 300, 500, 10 ** 6)


def load_records(data: Path | None, refs: Path | None, num: int | None = None) -> list[Record]:
    """Reference records: the rows of a test pickle (``data``; its ``one_idx`` structure and
    its ``family`` column when present) or the files under ``refs``; the first ``num`` only."""
    if data is not None:
        df = read_pickle(data, first=num)
        families = df["family"].astype(str) if "family" in df.columns else [""] * len(df)
        records = [Record(f"row{k}", seq.upper(), pairs_from_one_idx(idx), fam)
                   for k, (seq, idx, fam) in enumerate(zip(df["seq"], df["one_idx"], families))]
    else:
        records = read_references(refs)
    return records[:num] if num else records


def reference_records(args, log) -> list[Record]:
    """The records of ``--data`` or ``--refs`` (first ``--num``) to evaluate: bad letters
    are an error; records longer than ``--max_length`` are skipped and counted, or, with
    ``--strict_length``, an error."""
    records = load_records(args.data, args.refs, args.num)
    kept = check_sequences(args.data or args.refs, records, args.max_length, skip_long=not args.strict_length)
    if len(kept) < len(records):
        log.info("skipped %d of %d sequences longer than --max_length %d", len(records) - len(kept), len(records),
                 args.max_length)
    return kept


def score_row(index: int, rec: Record, method: str, pred, seconds: float) -> dict:
    """One per-sequence row: precision, recall, F1 (exact and with a one-position slip).
    ``index`` is the record's position (names need not be unique)."""
    exact, slip = pair_scores(pred, rec.pairs), pair_scores(pred, rec.pairs, slip=1)
    return {"index": index, "name": rec.name, "family": rec.family, "length": len(rec.seq), "method": method, **exact,
            "f1_slip": slip["f1"], "n_pred_pairs": len(pred), "n_ref_pairs": len(rec.pairs), "seconds": seconds}


def summarize(per_seq: pd.DataFrame) -> pd.DataFrame:
    """Mean scores per method: overall, per length bin and (when there are families) per
    family, with the number of sequences and seconds per sequence."""
    bins = pd.cut(per_seq["length"], LENGTH_BINS, right=True)
    order = {str(c): k for k, c in enumerate(bins.cat.categories)}
    per_seq = per_seq.assign(length_bin=bins.astype(str)).sort_values("length_bin", key=lambda s: s.map(order),
                                                                      kind="stable")
    parts = [per_seq.assign(group="all", value="all")]
    parts.append(per_seq.assign(group="length", value=per_seq["length_bin"]))
    if (per_seq["family"] != "").any():
        parts.append(per_seq.assign(group="family", value=per_seq["family"]))
    table = pd.concat(parts).groupby(["group", "value", "method"], sort=False).agg(
        n=("f1", "size"), precision=("precision", "mean"), recall=("recall", "mean"), f1=("f1", "mean"),
        f1_slip=("f1_slip", "mean"), seconds_per_seq=("seconds", "mean"))
    return table.reset_index()
