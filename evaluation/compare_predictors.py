"""Several predictors on the same reference structures, in one table.

Rows: ViennaRNA's MFE and MEA (gamma 1) structures, EternaFold's MEA structure with
--eternafold (LinearPartition, beam 100; requirements-eval.txt), then each --model NAME S1 S2
[METHOD]: an S1 and an S2 checkpoint (S1 '-' for a grammar model without S1 evidence),
decoded as its S2 checkpoint says or, for a grammar model, by METHOD (mea, threshold or
max; with +pk, e.g. threshold+pk, or pk alone for the checkpoint's decoder, the pseudoknot
layer adds crossing stems: stembb.grammar.pseudoknots). --max_span N folds the ViennaRNA and grammar rows with pairs at most N apart.
Writes --out (one row per sequence and predictor), <out>_summary.csv (mean scores
overall, per length bin, per family-size bin when the pickle has make_structure_dataset's
family_size column, per family and clan, family-macro) and <out>_table.md (the table
README and docs/RESULTS.md report).

    python evaluation/compare_predictors.py --data ../data/real/rfam.pkl.gz --split test \\
        --model shipped ../models/stembb_s1.pth ../models/stembb_s2.pth \\
        --model grammar - ../data/real/grammar.pth --model grammar_max - ../data/real/grammar.pth max \\
        --out ../data/real/compare_test.csv
"""
import argparse
import time
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from stembb.cli import HelpFormatter, check_num, check_outputs
from stembb.distributed import pick_device
from stembb.errors import InputError, run_main
from stembb.io import atomic_path, write_csv
from stembb.peers import eternafold_pairs
from stembb.pipeline import Predictor, check_max_span, predictor_from_checkpoints, set_max_span
from stembb.report import (LENGTH_BINS, add_reference_args, reference_records, rnafold_pairs, score_row, span_note,
                           summarize)
from stembb.runlog import start_run
from stembb.grammar.model import DECODERS

FAMILY_SIZE_BINS = (0, 5, 20, 10 ** 9)
LENGTH_COLUMNS = tuple(f"({low}, {high}]" for low, high in zip(LENGTH_BINS[:-1], LENGTH_BINS[1:]))


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_reference_args(p)
    p.add_argument("--model", nargs="+", action="append", default=[], metavar="NAME S1 S2 [METHOD]",
                   help="a predictor: its name, S1 checkpoint (- for none), S2 checkpoint, decoding method")
    p.add_argument("--no_vienna", action="store_true", help="leave out the ViennaRNA rows")
    p.add_argument("--eternafold", action="store_true",
                   help="add EternaFold's MEA structures (LinearPartition, beam 100: pip install -r requirements-eval.txt)")
    p.add_argument("--max_span", type=int, default=None,
                   help="pair only bases at most N apart in the ViennaRNA rows and the grammar models' rows "
                        "(their names say so); box models fold as they do")
    p.add_argument("--batch_size", type=int, default=16, help="sequences per forward pass")
    p.add_argument("--device", default=None)
    p.add_argument("--out", type=Path, required=True, help="per-sequence CSV")
    p.add_argument("--no_progress", action="store_true")
    return p


def parse_models(specs: list[list[str]]) -> list[tuple[str, Path | None, Path, str | None]]:
    out = []
    methods = (*DECODERS, *(m + "+pk" for m in DECODERS), "pk")
    for spec in specs:
        if len(spec) not in (3, 4) or (len(spec) == 4 and spec[3] not in methods):
            raise InputError(f"--model {' '.join(spec)}: give NAME S1 S2 [METHOD], METHOD one of {', '.join(methods)}")
        if spec[0] in [name for name, *_ in out]:
            raise InputError(f"--model {spec[0]}: this name is given twice; each predictor needs its own row name")
        s1 = None if spec[1] == "-" else Path(spec[1])
        out.append((spec[0], s1, Path(spec[2]), spec[3] if len(spec) == 4 else None))
    return out


def make_model(s1: Path | None, s2: Path, method: str | None, device, batch_size: int,
               max_span: int | None = None) -> Predictor:
    predictor = predictor_from_checkpoints(s1, s2, device, batch_size=batch_size)
    if max_span is not None and predictor.is_grammar:
        set_max_span(predictor, max_span, "--max_span", s2)
    if method is not None:
        if not predictor.is_grammar:
            raise InputError(f"{s2}: a decoding method is for grammar models (s2_training/train_s2_grammar.py)")
        decoder = method.removesuffix("pk").removesuffix("+")  # "threshold+pk" -> threshold; "pk" -> as stored
        if decoder:
            predictor.decoder = predictor.decoder | {"method": decoder}
        if method.endswith("pk"):
            predictor.decoder = predictor.decoder | {"pseudoknots": True}
    return predictor


def vienna_rows(records, show_progress: bool, max_span: int | None = None) -> list[dict]:
    rows = []
    for k, rec in enumerate(tqdm(records, desc="ViennaRNA", disable=not show_progress)):
        for method in ("MFE", "MEA"):
            t = time.perf_counter()
            pred = rnafold_pairs(rec.seq, method, max_span)
            rows.append(score_row(k, rec, f"RNAfold {method}{span_note(max_span)}", pred, time.perf_counter() - t))
    return rows


def eternafold_rows(records, show_progress: bool) -> list[dict]:
    rows = []
    for k, rec in enumerate(tqdm(records, desc="EternaFold", disable=not show_progress)):
        t = time.perf_counter()
        pred = eternafold_pairs(rec.seq)
        rows.append(score_row(k, rec, "EternaFold MEA", pred, time.perf_counter() - t))
    return rows


def family_size_summary(per_seq: pd.DataFrame, records) -> pd.DataFrame:
    bins = pd.cut(per_seq["index"].map(lambda k: records[k].family_size), FAMILY_SIZE_BINS).astype(str)
    return (per_seq.assign(group="family_size", value=bins).groupby(["group", "value", "method"], sort=False)
            .agg(n=("f1", "size"), f1=("f1", "mean")).reset_index())


def bin_label(interval: str, top: int) -> str:
    """``"(5, 20]"`` as ``"6-20"``; the last bin (up to ``top``) as ``"> 5"``."""
    low, high = (int(float(x)) for x in interval.strip("(]").split(","))
    return f"> {low}" if high >= top else f"{low + 1}-{high}"


def markdown_table(summary: pd.DataFrame, methods: list[str]) -> str:
    def get(group, method, value="all", column="f1"):
        row = summary[(summary["group"] == group) & (summary["value"] == value) & (summary["method"] == method)]
        return f"{row[column].item():.3f}" if len(row) else ""

    lengths = [v for v in LENGTH_COLUMNS if (summary["value"] == v).any()]
    sizes = sorted(summary.loc[summary["group"] == "family_size", "value"].unique(),
                   key=lambda v: float(v.split(",")[0].strip("(")))
    head = (["predictor", "F1", "family-macro", "P", "R"] + [f"{bin_label(v, LENGTH_BINS[-1])} nt" for v in lengths]
            + [f"family size {bin_label(v, FAMILY_SIZE_BINS[-1])}" for v in sizes] + ["s/seq"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        cells = [m, get("all", m), get("family_macro", m), get("all", m, column="precision"),
                 get("all", m, column="recall")] + [get("length", m, v) for v in lengths] + [
            get("family_size", m, v) for v in sizes] + [get("all", m, column="seconds_per_seq")]
        lines.append("| " + " | ".join(cells) + " |")
    counts = summary[(summary["method"] == methods[0]) & summary["group"].isin(["length", "family_size"])]
    note = ", ".join(f"{v}: {n}" for v, n in zip(counts["value"], counts["n"]))
    return "\n".join(lines) + f"\n\nSequences per bin: {note}.\n"


def main(args) -> None:
    models = parse_models(args.model)
    if not models and args.no_vienna:
        raise InputError("nothing to compare: give --model or leave out --no_vienna")
    stem = args.out.with_name(args.out.name.removesuffix(".csv"))
    inputs = [args.data or args.refs] + [p for _, s1, s2, _ in models for p in (s1, s2)]
    check_outputs([args.out, Path(f"{stem}_summary.csv"), Path(f"{stem}_table.md")], inputs)
    check_num(args.num)
    log = start_run("compare_predictors")
    records = reference_records(args, log)
    device = pick_device(args.device)
    if args.max_span is not None:
        check_max_span("--max_span", args.max_span)
    predictors = [(name, make_model(s1, s2, method, device, args.batch_size, args.max_span))
                  for name, s1, s2, method in models]
    predictors = [(name + (span_note(args.max_span) if p.is_grammar else ""), p) for name, p in predictors]
    if args.eternafold and args.max_span is not None:
        raise InputError("--eternafold folds whole sequences: leave out --max_span, or --eternafold")
    rows = [] if args.no_vienna else vienna_rows(records, not args.no_progress, args.max_span)
    if args.eternafold:
        rows += eternafold_rows(records, not args.no_progress)
    seqs = [rec.seq for rec in records]
    for name, predictor in predictors:
        predictor.warm_up()
        t = time.perf_counter()
        structures = predictor.predict(seqs)
        seconds = (time.perf_counter() - t) / len(seqs)
        rows += [score_row(k, rec, name, pred, seconds) for k, (rec, pred) in enumerate(zip(records, structures))]
        log.info("%s: %.3f s per sequence", name, seconds)
    per_seq = pd.DataFrame(rows)
    summary = summarize(per_seq)
    if all(rec.family_size for rec in records):  # make_structure_dataset.py's pickles know them
        summary = pd.concat([summary, family_size_summary(per_seq, records)], ignore_index=True)
    methods = list(dict.fromkeys(per_seq["method"]))
    write_csv(per_seq, args.out)
    write_csv(summary, Path(f"{stem}_summary.csv"))
    table = markdown_table(summary, methods)
    with atomic_path(Path(f"{stem}_table.md")) as tmp:
        tmp.write_text(table)
    log.info("mean F1 on %d sequences:\n%s", len(records), table)


if __name__ == "__main__":
    run_main(lambda: main(get_args_parser().parse_args()))
