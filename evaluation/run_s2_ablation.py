"""S2 ablation: the same S1 candidates, assembled into structures by several scorers.

Rows (one S1 checkpoint, one test set, one run):

- ``oracle``: 1 for candidate pairs that are reference pairs, 0 otherwise (what a perfect
  S2 could reach from these candidates);
- ``s1_prob``: S1 alone, a candidate pair scored by the larger of its median ``prob_on``
  over softmax- and scalar-size proposals; its gamma is the best on this test set
  (an optimistic baseline: it has no validation split of its own);
- one row per ``--s2_models`` checkpoint (box transformer or graph network), decoded at
  the gamma calibrated on its validation split (or ``--gamma``).

The oracle and S1 rows are decoded by the MEA DP (``stembb.grammar.decode``); each S2 row by
its own decoder (the box transformer: the structure assembly with its loop terms; the
graph network: the MEA DP). Writes --out (the table: precision,
recall, F1 exact and with slip, F1 per length bin, seconds per sequence), <out>_per_seq.csv
and <out>.png.

    python evaluation/run_s2_ablation.py --s1_model S1.pth --s2_models BOX.pth GNN.pth \\
        --data data/test.pkl.gz --out data/s2_ablation.csv
"""
import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from stembb.boxes import proposal_pairs
from stembb.cli import HelpFormatter, check_at_least_one, check_num, check_outputs, check_positive, check_threshold
from stembb.distributed import pick_device
from stembb.errors import run_main
from stembb.io import write_csv
from stembb.s2.predictor import BoxPredictor, load_box_model
from stembb.plots import plt, save_figure
from stembb.report import add_reference_args, reference_records, score_row, summarize
from stembb.runlog import start_run
from stembb.s1.predict import load_s1_model
from stembb.s2.candidates import pair_features
from stembb.grammar.decode import decode_structure
from stembb.s2.engine import GAMMA_GRID, S2_KINDS


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--s1_model", type=Path, required=True, help="S1 checkpoint")
    p.add_argument("--s2_models", type=Path, nargs="+", required=True, help="S2 checkpoints (box or gnn)")
    add_reference_args(p)
    p.add_argument("--out", type=Path, required=True, help="summary CSV")
    p.add_argument("--threshold_p", "--threshold", dest="threshold_p", type=float, default=0.1,
                   help="S1 p_on threshold in (0, 1)")
    p.add_argument("--gamma", type=float, default=None, help="decode every S2 model at this gamma instead of its own")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--device", default=None)
    return p


def s1_prob_pairs(proposals) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs scored by S1 alone: max of the median prob_on of the two size sources."""
    feats = pair_features(proposals)
    pairs = np.array(list(feats), dtype=np.int64).reshape(-1, 2)
    probs = np.array([max(f[2], f[4]) for f in feats.values()])
    return pairs, probs


def plot_ablation(summary: pd.DataFrame, methods: list[str], path: Path) -> None:
    bins = summary[summary["group"] == "length"]
    labels = list(dict.fromkeys(bins["value"]))
    x = np.arange(len(labels))
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for k, method in enumerate(methods):
        vals = bins[bins["method"] == method].set_index("value").reindex(labels)["f1"]
        ax.bar(x + (k - (len(methods) - 1) / 2) * width, vals, width, label=method)
    ax.set_xticks(x, labels, rotation=20)
    ax.set(ylabel="mean base-pair F1", xlabel="length bin (nt)", ylim=(0, 1.05),
           title="S2 ablation: same S1 candidates, same structure decoder")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def main(args) -> None:
    check_threshold("--threshold_p", args.threshold_p)
    check_positive(args, "gamma")
    check_at_least_one(args, "batch_size")
    check_outputs([args.out], [args.data or args.refs, args.s1_model, *args.s2_models])
    check_num(args.num)
    log = start_run("run_s2_ablation")
    records = reference_records(args, log)
    seqs = [r.seq for r in records]
    device = pick_device(args.device)
    s1, _ = load_s1_model(args.s1_model, device)
    predictors = {}
    for path in args.s2_models:
        s2, spec, state = load_box_model(path, device)
        gamma = state.get("decode_gamma", 1.0) if args.gamma is None else args.gamma
        name = f"{S2_KINDS[spec.kind]}:{path.name}"
        predictors[name] = BoxPredictor(s1, s2, spec, state["config"], device, args.threshold_p, gamma, args.batch_size)
        log.info("%s: gamma %g", name, gamma)
    first = next(iter(predictors.values()))
    proposals = first.proposals(seqs)
    s1_seconds = (first.timings["s1_forward"] + first.timings["s1_decode"]) / len(seqs)
    rows = []

    def decode_all(method, scored, gamma):
        t = time.perf_counter()
        preds = [decode_structure(len(s), pairs, probs, gamma, s) for s, (pairs, probs) in zip(seqs, scored)]
        per = s1_seconds + (time.perf_counter() - t) / len(seqs)
        return [score_row(k, rec, method, pred, per) for k, (rec, pred) in enumerate(zip(records, preds))]

    oracle = []
    for rec, props in zip(records, proposals):
        pairs = proposal_pairs(props.bx, props.by, props.w)
        ref = set(rec.pairs)
        oracle.append((pairs, np.array([float((int(i), int(j)) in ref) for i, j in pairs])))
    rows += decode_all("oracle", oracle, 1.0)
    s1_scored = [s1_prob_pairs(p) for p in tqdm(proposals, desc="S1 features")]
    s1_tables = {g: decode_all("s1_prob", s1_scored, g) for g in GAMMA_GRID}
    best = max(GAMMA_GRID, key=lambda g: (np.mean([r["f1"] for r in s1_tables[g]]), -g))
    log.info("s1_prob: best gamma on this test set %g", best)
    rows += s1_tables[best]
    for name, predictor in predictors.items():
        t = time.perf_counter()
        preds = predictor.structures(seqs, proposals)
        per = s1_seconds + (time.perf_counter() - t) / len(seqs)
        rows += [score_row(k, rec, name, pred, per) for k, (rec, pred) in enumerate(zip(records, preds))]
    per_seq = pd.DataFrame(rows)
    summary = summarize(per_seq)
    methods = list(dict.fromkeys(per_seq["method"]))
    overall = summary[summary["group"] == "all"].drop(columns=["group", "value"]).set_index("method")
    lengths = summary[summary["group"] == "length"]
    bins = lengths.pivot(index="method", columns="value", values="f1")[list(dict.fromkeys(lengths["value"]))]
    table = overall.join(bins.add_prefix("f1_len_")).reindex(methods).reset_index()
    table.insert(1, "gamma", [1.0, best] + [p.gamma for p in predictors.values()])
    stem = args.out.with_name(args.out.name.removesuffix(".csv"))
    write_csv(table, args.out)
    write_csv(per_seq, Path(f"{stem}_per_seq.csv"))
    plot_ablation(summary, methods, Path(f"{stem}.png"))
    log.info("wrote %s, %s_per_seq.csv and %s.png", args.out, stem, stem)
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.precision", 3):
        log.info("S2 ablation on %d sequences:\n%s", len(seqs), table.to_string(index=False))


if __name__ == "__main__":
    run_main(lambda: main(get_args_parser().parse_args()))
