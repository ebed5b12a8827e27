"""Evaluate S1 checkpoints on a test set: stem-box sensitivity per threshold.

One CSV row per checkpoint and threshold (--out), per-sequence metrics next to it
(<out>_per_seq.csv), and two plots in --plot_dir: s1_test_set_sensitivity.png (per run,
bars for identical bb, overlap bb and base pair, with std error bars; at the first
threshold) and s1_sensitivity_tradeoff.png (sensitivity against proposals per target
stem, one curve per run across the thresholds).

    python evaluation/run_s1_inference.py --data TEST.pkl.gz --threshold 0.1 --out data/s1_eval_metric_1.csv
"""
import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from stembb.checkpoint import S1_KIND, S2_GRAMMAR_KIND, checkpoint_epoch, latest_checkpoint, read_arrays, run_ids
from stembb.cli import HelpFormatter, check_num, check_outputs
from stembb.distributed import pick_device
from stembb.errors import InputError, run_main
from stembb.io import REPO_ROOT
from stembb.io import read_pickle, write_csv
from stembb.boxes import stem_corners
from stembb.metrics import s1_sequence_metrics
from stembb.plots import plt, save_figure
from stembb.grammar.model import GrammarFold
from stembb.grammar.network import iter_network_maps
from stembb.s1.predict import decode_proposals, iter_maps, load_s1_model
from stembb.runlog import start_run

METRICS = ("bb_identical", "bb_overlap", "bp")
DEFAULT_RESULTS = REPO_ROOT / "s1_training" / "result"


def threshold_value(text: str) -> float:
    v = float(text)
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"threshold must be in (0, 1), got {text}")
    return v


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="test pickle (seq, one_idx, bounding_boxes)")
    p.add_argument("--threshold_p", "--threshold", dest="threshold", type=threshold_value, nargs="+", default=[0.1],
                   help="p_on thresholds in (0, 1)")
    p.add_argument("--out", type=Path, required=True, help="summary CSV")
    p.add_argument("--models", type=Path, nargs="+", default=None,
                   help=f"checkpoints or run folders (default: latest checkpoint of every run under {DEFAULT_RESULTS})")
    p.add_argument("--num", type=int, default=None, help="evaluate the first N sequences only")
    p.add_argument("--plot_dir", type=Path, default=REPO_ROOT / "plot",
                   help="where the PNGs go (default: the repository's plot/, from whatever folder you run)")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--device", default=None)
    return p


def find_checkpoints(models) -> list[Path]:
    if models is None:
        runs = sorted(d for d in DEFAULT_RESULTS.glob("*") if d.is_dir()) if DEFAULT_RESULTS.is_dir() else []
        models = runs
        if not runs:
            raise InputError(f"{DEFAULT_RESULTS}: no run folders; pass --models CHECKPOINT_OR_RUN_FOLDER")
    found = []
    for m in models:
        ckpt = latest_checkpoint(m) if m.is_dir() else m
        if ckpt is None:
            raise InputError(f"{m}: no model_ckpt_ep_*.pth in this run folder")
        found.append(ckpt)
    return found


def maps_of_checkpoint(ckpt: Path, seqs: list[str], device, batch_size):
    """``(index, maps)`` per sequence from an S1 checkpoint, or from the deep S1 inside a
    grammar model's checkpoint (``train_s2_grammar.py --deep_s1``; it runs on the CPU)."""
    state = read_arrays(ckpt, (S1_KIND, S2_GRAMMAR_KIND))
    if state["kind"] == S2_GRAMMAR_KIND:
        fold = GrammarFold.from_state(state)
        if fold.network is None:
            raise InputError(f"{ckpt}: a grammar model without an S1 network (train one with --deep_s1)")
        return iter_network_maps(fold, seqs)
    model, _ = load_s1_model(ckpt, device)
    return iter_maps(model, seqs, device, batch_size)


def evaluate_checkpoint(ckpt: Path, run_id: str, df: pd.DataFrame, thresholds, device, batch_size) -> pd.DataFrame:
    """Per-sequence metrics of one checkpoint at every threshold."""
    seqs = df["seq"].tolist()
    boxes = df["bounding_boxes"].tolist()
    rows = []
    # maps are decoded batch by batch as they come (never all held at once)
    for k, maps in tqdm(maps_of_checkpoint(ckpt, seqs, device, batch_size), total=len(seqs),
                        desc=f"S1 {ckpt.name}"):
        stems = stem_corners(boxes[k])
        for t in thresholds:
            rows.append({"seq_index": k, "length": len(seqs[k]), "threshold": t,
                         **s1_sequence_metrics(stems, decode_proposals(maps, seqs[k], t))})
    out = pd.DataFrame(rows).sort_values("seq_index", kind="stable").reset_index(drop=True)
    out.insert(0, "epoch_id", checkpoint_epoch(ckpt))
    out.insert(0, "run_id", run_id)
    return out


def summarize(per_seq: pd.DataFrame) -> pd.DataFrame:
    g = per_seq.groupby(["run_id", "epoch_id", "threshold"], sort=False)
    out = g[list(METRICS)].agg(["mean", "std"])
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    out["proposals_per_target_stem"] = g["proposals_per_stem"].mean()
    out["bp_precision"] = g["bp_precision"].mean()
    out["n_seq"] = g.size()
    return out.reset_index()


def plot_sensitivity(summary: pd.DataFrame, path: Path) -> None:
    first = summary[summary["threshold"] == summary["threshold"].iloc[0]]
    labels = [f"{r}\nep {e}" for r, e in zip(first["run_id"], first["epoch_id"])]
    x = np.arange(len(first))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(first)), 4))
    for k, (m, name) in enumerate(zip(METRICS, ("identical bb", "overlap bb", "base pair"))):
        ax.bar(x + (k - 1) * 0.27, first[f"{m}_mean"], 0.27, yerr=first[f"{m}_std"], capsize=3, label=name)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set(ylabel="sensitivity", ylim=(0, 1.05), title=f"S1 test-set sensitivity (threshold {first['threshold'].iloc[0]})")
    ax.legend()
    save_figure(fig, path)


def plot_tradeoff(summary: pd.DataFrame, path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for (run, epoch), grp in summary.groupby(["run_id", "epoch_id"], sort=False):
        grp = grp.sort_values("proposals_per_target_stem")
        for ax, m in zip(axes, METRICS):
            ax.plot(grp["proposals_per_target_stem"], grp[f"{m}_mean"], marker="o", label=f"{run} ep {epoch}")
            for t, x, y in zip(grp["threshold"], grp["proposals_per_target_stem"], grp[f"{m}_mean"]):
                ax.annotate(f"{t:g}", (x, y), fontsize=6)
    for ax, m in zip(axes, METRICS):
        ax.set(xscale="log", xlabel="proposals per target stem", ylabel=f"{m} sensitivity", ylim=(0, 1.05))
    axes[0].legend(fontsize=7)
    save_figure(fig, path)


def main(args) -> None:
    check_num(args.num)
    log = start_run("run_s1_inference")
    df = read_pickle(args.data, first=args.num)
    checkpoints = find_checkpoints(args.models)
    check_outputs([args.out], [args.data, *checkpoints])
    device = pick_device(args.device)
    log.info("%d test sequences, %d checkpoint(s), thresholds %s, device %s", len(df), len(checkpoints),
             args.threshold, device)
    frames = []
    for ckpt, run_id in zip(checkpoints, run_ids(checkpoints)):
        started = time.perf_counter()
        frames.append(evaluate_checkpoint(ckpt, run_id, df, args.threshold, device, args.batch_size))
        seconds = time.perf_counter() - started
        log.info("%s: S1 forward + decoding of %d sequences at %d threshold(s) in %.1f s (%.1f sequences/s)",
                 ckpt, len(df), len(args.threshold), seconds, len(df) / seconds)
    per_seq = pd.concat(frames, ignore_index=True)
    summary = summarize(per_seq)
    write_csv(summary, args.out)
    per_seq_path = args.out.with_name(args.out.name.removesuffix(".csv") + "_per_seq.csv")
    write_csv(per_seq, per_seq_path)
    plot_sensitivity(summary, args.plot_dir / "s1_test_set_sensitivity.png")
    plot_tradeoff(summary, args.plot_dir / "s1_sensitivity_tradeoff.png")
    for _, r in summary.iterrows():
        log.info("%s ep %d @ %.3g: identical %.3f, overlap %.3f, bp %.3f, %.1f proposals/stem, bp precision %.3f",
                 r["run_id"], r["epoch_id"], r["threshold"], r["bb_identical_mean"], r["bb_overlap_mean"],
                 r["bp_mean"], r["proposals_per_target_stem"], r["bp_precision"])
    log.info("wrote %s, %s and plots in %s", args.out, per_seq_path, args.plot_dir)


if __name__ == "__main__":
    run_main(lambda: main(get_args_parser().parse_args()))
