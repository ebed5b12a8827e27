"""The cross-family benchmark (ArchiveII family-fold): for each family, train the loop
grammar on the other families, choose every knob on validation records drawn from those
training families only, and test on the held-out family.

--data is a folder of structure files in which each multi-record file is a family
(ArchiveII's ``5s.bpseq``, ``tRNA.bpseq`` ...; subfolders also name families). For each
held-out family F, under --out/F/:

- ``data.pkl.gz``: F's records, all of them, as the test split (pairs as the file gives
  them: crossing, non-canonical and neighbouring pairs are scored); the other families'
  records, less exact duplicates and any sequence of F, split into train and a seeded
  --val_fraction of each family as val;
- ``grammar.pth``: s2_training/train_s2_grammar.py on that split (--epochs, --lr, --pull ...;
  the best validation epoch kept, the decoder chosen on validation), and
  ``energy_fit.pth``: the same with no epoch (the energy-fitted start, decoder chosen on
  the same validation records);
- ``compare.csv``: evaluation/compare_predictors.py on F: RNAfold MFE and MEA, EternaFold
  (--eternafold), the two models above and the shipped model (--shipped; it was trained
  on Rfam families, never on ArchiveII).

A fold whose outputs exist is reused with --resume (a killed run loses at most the fold
in progress). Then one table over every test record: ``family_fold.csv`` (per record and
predictor), ``family_fold_summary.csv`` (per family and overall: F1, precision, recall,
F1 on crossing pairs over the pseudoknotted records), ``family_fold_table.md`` and
``family_fold.png``.

    python evaluation/family_fold.py --data ../shared/data/real_structures/archiveii --out data/family_fold \\
        --eternafold --seed 0
"""
import argparse
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from stembb.cli import HelpFormatter, check_at_least_one, seed
from stembb.data.formats import read_references
from stembb.errors import InputError, RunFailed, run_main
from stembb.io import REPO_ROOT, atomic_path, write_csv, write_pickle
from stembb.pipeline import SHIPPED_S2
from stembb.plots import plt, save_figure
from stembb.runlog import start_run
from stembb.s1.model import DEEP_NETWORKS
from stembb.structure import crossing_pairs, local_structure_boxes, one_idx_from_pairs

TRAINER = REPO_ROOT / "s2_training" / "train_s2_grammar.py"
COMPARE = REPO_ROOT / "evaluation" / "compare_predictors.py"
ORDER = ("RNAfold MFE", "RNAfold MEA", "EternaFold MEA", "energy fit", "shipped", "trained", "shipped + deep S1",
         "shipped + deep S1 + pseudoknots")
MIN_VAL_FAMILY = 50


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="folder of structure files, one family per file")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (one subfolder per held-out family); required unless --all_families_data is given")
    p.add_argument("--families", nargs="+", default=None, help="hold out only these families (default: each)")
    p.add_argument("--val_fraction", type=float, default=0.05,
                   help="share of each training family's records held out for validation (at least one record)")
    p.add_argument("--val_families", type=int, default=0, metavar="N",
                   help="validate instead on N whole training families drawn per fold (seeded; families of at "
                        f"least {MIN_VAL_FAMILY} records), left out of training: early stopping and the decoder are "
                        "then chosen across families")
    p.add_argument("--max_val", type=int, default=200,
                   help="with --val_families, validate on at most this many of their records (seeded sample)")
    p.add_argument("--max_train_length", type=int, default=None,
                   help="leave training and validation records longer than this out (test records are all kept)")
    p.add_argument("--num_test", type=int, default=None, help="test only the first N records of each family")
    p.add_argument("--extra_train", type=Path, nargs="+", default=[],
                   help="structure pickles added to every fold's training rows (e.g. PDB TR1, Rfam train families)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.01, help="chosen on PDB VL1 (docs/RESULTS.md, family-fold)")
    p.add_argument("--pull", type=float, default=0.01, help="chosen on PDB VL1 (docs/RESULTS.md, family-fold)")
    p.add_argument("--crop", type=int, default=150,
                   help="train on longer structures as their domains of at most this many bases (the trainer's --crop)")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2, help="partition functions computed in parallel")
    p.add_argument("--init_terms", type=Path, default=SHIPPED_S2, help="the energy fit the grammar starts from")
    p.add_argument("--eternafold", action="store_true", help="add EternaFold (pip install -r requirements-eval.txt)")
    p.add_argument("--no_shipped", action="store_true", help="leave out the shipped model's row")
    p.add_argument("--deep_s1", default=None, metavar="NAME",
                   help="also train this deep S1 (stembb.s1.model.DEEP_NETWORKS) over the shipped grammar's fixed "
                        "loop terms on each fold: rows 'shipped + deep S1' and, with its pair map feeding the "
                        "pseudoknot layer, 'shipped + deep S1 + pseudoknots'")
    p.add_argument("--deep_epochs", type=int, default=3)
    p.add_argument("--deep_epoch_size", type=int, default=None,
                   help="structures per deep S1 epoch, drawn afresh each epoch (the trainer's --epoch_size)")
    p.add_argument("--network_lr", type=float, default=0.001, help="the deep S1's learning rate")
    p.add_argument("--heads_weight", type=float, default=0.1, help="weight of the deep S1's stem-box heads' loss")
    p.add_argument("--no_grammar_training", action="store_true",
                   help="leave out the energy-fit and trained rows (no grammar is trained), e.g. to measure a deep "
                        "S1 alone")
    p.add_argument("--resume", action="store_true", help="reuse the folds already finished under --out")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--no_progress", action="store_true")
    p.add_argument("--all_families_data", type=Path, default=None, metavar="FILE",
                   help="instead of the benchmark, write every family's records as train and val rows (the same "
                        "split of each family) to FILE, the data of a model trained on all of them, and stop")
    return p


def family_records(path: Path, log) -> dict[str, list]:
    """Records of ``path`` by family, in file order."""
    counts: Counter = Counter()
    records = read_references(path, counts=counts)
    by_family: dict[str, list] = {}
    for rec in records:
        if not rec.family:
            raise InputError(f"{path}: record {rec.name!r} has no family (give a folder of one file per family)")
        by_family.setdefault(rec.family, []).append(rec)
    log.info("%s: %d records in %d families (%s)%s", path, len(records), len(by_family),
             ", ".join(f"{f} {len(r)}" for f, r in by_family.items()),
             "".join(f"; {n} {why}" for why, n in counts.items()))
    if len(by_family) < 2:
        raise InputError(f"{path}: family-fold needs at least two families, found {len(by_family)}")
    return by_family


def rows_of(records, split: str) -> list[dict]:
    return [{"seq": rec.seq, "one_idx": one_idx_from_pairs(rec.pairs), "bounding_boxes": local_structure_boxes(rec.pairs),
             "family": rec.family, "clan": "", "name": rec.name, "split": split,
             "pseudoknotted": bool(crossing_pairs(rec.pairs))} for rec in records]


def fold_frame(by_family: dict[str, list], held_out: str | None, args) -> tuple[pd.DataFrame, Counter]:
    """The held-out family's records as test; the others' as train and val, exact
    duplicates and test sequences left out. Val is a seeded ``--val_fraction`` of each
    family or, with ``--val_families N``, up to ``--max_val`` records of N whole training
    families drawn per held-out family (those families are not trained on), so that
    whatever is chosen on val is chosen for families the model never saw. With
    ``held_out`` None every family is train and val (the data of a model that learns
    from all of them)."""
    test = [] if held_out is None else by_family[held_out][:args.num_test]
    seen = {rec.seq for rec in by_family.get(held_out, [])}
    dropped: Counter = Counter()
    kept_by_family = {}
    for family, records in sorted(by_family.items()):
        if family == held_out:
            continue
        kept = []
        for rec in records:
            if rec.seq in seen:
                dropped["duplicate or held-out sequence"] += 1
            elif args.max_train_length is not None and len(rec.seq) > args.max_train_length:
                dropped["over --max_train_length"] += 1
            elif not rec.pairs:
                dropped["no base pair"] += 1
            else:
                seen.add(rec.seq)
                kept.append(rec)
        if kept:
            kept_by_family[family] = kept
    rows = rows_of(test, "test")
    if held_out is not None and args.val_families:
        val_families = draw_val_families(kept_by_family, held_out, sorted(by_family), args)
        val = [rec for f in val_families for rec in kept_by_family.pop(f)]
        rng = np.random.default_rng([args.seed, len(by_family)])
        rows += rows_of([val[i] for i in sorted(rng.permutation(len(val))[:args.max_val])], "val")
        rows += rows_of([rec for kept in kept_by_family.values() for rec in kept], "train")
        return pd.DataFrame(rows), dropped
    for k, family in enumerate(sorted(by_family)):
        kept = kept_by_family.get(family)
        if not kept:
            continue
        rng = np.random.default_rng([args.seed, k])
        n_val = max(1, round(args.val_fraction * len(kept)))
        val = set(rng.permutation(len(kept))[:n_val].tolist())
        rows += rows_of([r for i, r in enumerate(kept) if i in val], "val")
        rows += rows_of([r for i, r in enumerate(kept) if i not in val], "train")
    return pd.DataFrame(rows), dropped


def draw_val_families(kept_by_family: dict[str, list], held_out: str, families: list[str], args) -> list[str]:
    """``--val_families`` of the training families, drawn per held-out family (seeded)
    among those with at least ``MIN_VAL_FAMILY`` records: fewer cannot choose an epoch."""
    pool = sorted(f for f, kept in kept_by_family.items() if len(kept) >= MIN_VAL_FAMILY)
    if len(pool) < args.val_families or len(kept_by_family) <= args.val_families:
        raise InputError(f"--val_families {args.val_families}: fold {held_out} has {len(pool)} families of at least "
                         f"{MIN_VAL_FAMILY} records to validate on and must keep one to train on")
    rng = np.random.default_rng([args.seed, families.index(held_out)])
    return sorted(pool[i] for i in rng.permutation(len(pool))[:args.val_families])


def run_script(script: Path, *argv, log) -> None:
    cmd = [sys.executable, str(script), *map(str, argv)]
    proc = subprocess.run(cmd, cwd=script.parent)
    if proc.returncode:
        raise RunFailed(f"{script.name} failed (status {proc.returncode}); its log above says why; rerun with "
                        "--resume to keep the finished folds")
    log.info("finished %s", script.name)


def run_fold(by_family: dict[str, list], family: str, args, log) -> Path:
    """One held-out family: its data, its two grammar models, its comparison CSV."""
    folder = args.out / family
    compare = folder / "compare.csv"
    if args.resume and compare.exists():
        log.info("%s: reusing %s", family, compare)
        return compare
    folder.mkdir(parents=True, exist_ok=True)
    df, dropped = fold_frame(by_family, family, args)
    data = folder / "data.pkl.gz"
    write_pickle(df, data)
    n = df["split"].value_counts()
    log.info("%s held out: test %d, train %d, val %d records%s (left out of train/val: %s)", family,
             n.get("test", 0), n.get("train", 0), n.get("val", 0),
             f" of the families {', '.join(sorted(set(df.loc[df['split'] == 'val', 'family'])))}"
             if args.val_families else "", ", ".join(f"{c} {why}" for why, c in dropped.items()) or "none")
    progress = ["--no_progress"] if args.no_progress else []
    common = ["--data", data, "--threads", args.threads, "--seed", args.seed,
              *progress]
    if args.extra_train:
        common += ["--extra_train", *args.extra_train]
    grammars = [] if args.no_grammar_training else [("energy_fit", 0), ("grammar", args.epochs)]
    for name, epochs in grammars:
        model = folder / f"{name}.pth"
        if not (args.resume and model.exists()):
            run_script(TRAINER, *common, "--init_terms", args.init_terms, "--out", model, "--epochs", epochs,
                       "--lr", args.lr, "--pull", args.pull, "--batch_size", args.batch_size, "--crop", args.crop,
                       log=log)
    deep = folder / "deep_s1.pth"
    if args.deep_s1 and not (args.resume and deep.exists()):
        run_script(TRAINER, *common, "--out", deep, "--deep_s1", args.deep_s1, "--init_terms", SHIPPED_S2,
                   "--epochs", args.deep_epochs, "--network_lr", args.network_lr, "--heads_weight", args.heads_weight,
                   "--batch_size", 8, "--crop", args.crop,
                   *(["--epoch_size", args.deep_epoch_size] if args.deep_epoch_size else []), log=log)
    models = [] if args.no_grammar_training else ["--model", "energy fit", "-", folder / "energy_fit.pth"]
    if not args.no_shipped:
        models += ["--model", "shipped", "-", SHIPPED_S2]
    if not args.no_grammar_training:
        models += ["--model", "trained", "-", folder / "grammar.pth"]
    if args.deep_s1:
        models += ["--model", "shipped + deep S1", "-", deep, "--model", "shipped + deep S1 + pseudoknots", "-", deep,
                   "pk"]
    run_script(COMPARE, "--data", data, "--split", "test", "--max_length", 10 ** 6, *models,
               *(["--eternafold"] if args.eternafold else []), *progress, "--out", compare, log=log)
    return compare


def family_table(per_seq: pd.DataFrame) -> pd.DataFrame:
    """Mean F1 per predictor (rows) overall and per family (columns), the crossing-pair
    F1 over pseudoknotted records, and the families above RNAfold MFE."""
    methods = [m for m in ORDER if m in set(per_seq["method"])]
    fam = per_seq.pivot_table(index="method", columns="family", values="f1", aggfunc="mean").reindex(methods)
    table = pd.DataFrame({"F1": per_seq.groupby("method")["f1"].mean().reindex(methods),
                          "precision": per_seq.groupby("method")["precision"].mean().reindex(methods),
                          "recall": per_seq.groupby("method")["recall"].mean().reindex(methods),
                          "family-macro F1": fam.mean(axis=1),
                          "crossing-pair F1": per_seq.groupby("method")["f1_crossing"].mean().reindex(methods)})
    table = pd.concat([table, fam], axis=1)
    if "RNAfold MFE" in fam.index:
        table["families above RNAfold MFE"] = (fam > fam.loc["RNAfold MFE"]).sum(axis=1)
    return table


def markdown(table: pd.DataFrame, per_seq: pd.DataFrame) -> str:
    records = per_seq.drop_duplicates("index_global")
    sizes = records.groupby("family").size()
    head = ["predictor"] + [c if c not in sizes.index else f"{c} ({sizes[c]})" for c in table.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, row in table.iterrows():
        cells = [f"{v:.0f}" if c == "families above RNAfold MFE" else f"{v:.3f}" for c, v in row.items()]
        lines.append("| " + " | ".join([method] + cells) + " |")
    return ("\n".join(lines) + f"\n\nMean per-sequence base-pair F1 over {len(records)} test records "
            f"({int(records['pseudoknotted'].sum())} pseudoknotted, over which crossing-pair F1 is the mean).\n")


def plot_families(table: pd.DataFrame, families: list[str], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(1.3 * len(families) + 3, 4.2))
    x = np.arange(len(families) + 1)
    width = 0.8 / len(table)
    for k, (method, row) in enumerate(table.iterrows()):
        ax.bar(x + (k - len(table) / 2 + 0.5) * width, [row[f] for f in families] + [row["F1"]], width, label=method)
    ax.set_xticks(x, families + ["all"])
    ax.set(ylabel="mean F1 (held-out family)", ylim=(0, 1), title="family-fold: train on the others, test on one")
    ax.legend(fontsize=7, ncol=3)
    save_figure(fig, path)


def write_all_families(args) -> None:
    """--all_families_data: every family's records as train and val rows, nothing held out."""
    log = start_run("family_fold", args.seed, args.all_families_data.with_name(
        args.all_families_data.name.removesuffix(".gz").removesuffix(".pkl") + ".log"))
    df, dropped = fold_frame(family_records(args.data, log), None, args)
    write_pickle(df, args.all_families_data)
    n = df["split"].value_counts()
    log.info("wrote %s: train %d, val %d records of %d families (left out: %s)", args.all_families_data,
             n.get("train", 0), n.get("val", 0), df["family"].nunique(),
             ", ".join(f"{c} {why}" for why, c in dropped.items()) or "none")


def main(args) -> None:
    check_at_least_one(args, "batch_size", "threads")
    if not 0 < args.val_fraction < 1:
        raise InputError(f"--val_fraction must be in (0, 1), got {args.val_fraction}")
    if args.val_families < 0 or args.max_val < 1:
        raise InputError(f"--val_families must be at least 0 and --max_val at least 1, got {args.val_families} and "
                         f"{args.max_val}")
    if args.all_families_data is not None:
        if args.val_families:
            raise InputError("--val_families holds families out of training; --all_families_data trains on all")
        write_all_families(args)
        return
    if args.out is None:
        raise InputError("--out is required (the benchmark's folder), unless --all_families_data is given")
    if args.epochs < 0 or args.deep_epochs < 0:
        raise InputError(f"--epochs and --deep_epochs must be at least 0, got {args.epochs} and {args.deep_epochs}")
    if args.deep_s1 is not None and args.deep_s1 not in DEEP_NETWORKS:
        raise InputError(f"--deep_s1 {args.deep_s1}: not a deep S1 network ({', '.join(DEEP_NETWORKS)})")
    if args.no_grammar_training and args.no_shipped and not args.deep_s1:
        raise InputError("--no_grammar_training with --no_shipped leaves no model of ours to measure")
    if args.out.exists() and not args.out.is_dir():
        raise InputError(f"{args.out}: --out is a folder; this is a file")
    if args.out.is_dir() and any(args.out.iterdir()) and not args.resume:
        raise InputError(f"{args.out}: folder holds an earlier run; continue it with --resume or write elsewhere")
    args.out.mkdir(parents=True, exist_ok=True)
    # the trainer and the comparison run in their own folders
    args.out, args.init_terms = args.out.resolve(), args.init_terms.resolve()
    args.extra_train = [p.resolve() for p in args.extra_train]
    log = start_run("family_fold", args.seed, args.out / "family_fold.log")
    by_family = family_records(args.data, log)
    families = args.families or list(by_family)
    unknown = [f for f in families if f not in by_family]
    if unknown:
        raise InputError(f"--families {' '.join(unknown)}: not a family of {args.data} ({', '.join(by_family)})")
    parts = []
    for family in families:
        part = pd.read_csv(run_fold(by_family, family, args, log))
        parts.append(part.assign(index_global=family + ":" + part["index"].astype(str)))
    per_seq = pd.concat(parts, ignore_index=True)
    table = family_table(per_seq)
    write_csv(per_seq.drop(columns="index_global"), args.out / "family_fold.csv")
    write_csv(table.reset_index(names="method"), args.out / "family_fold_summary.csv")
    text = markdown(table, per_seq)
    with atomic_path(args.out / "family_fold_table.md") as tmp:
        tmp.write_text(text)
    plot_families(table, families, args.out / "family_fold.png")
    log.info("family-fold over %d families:\n%s", len(families), text)


if __name__ == "__main__":
    run_main(lambda: main(get_args_parser().parse_args()))
