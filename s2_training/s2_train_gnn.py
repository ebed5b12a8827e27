"""Train the S2 graph network on S1 candidate pairs (pickles of s1_pred_stem_processing.py --features).

Outputs sit next to --log: with --log result/s2_gnn_run_20.log, the metrics are
result/s2_gnn_run_20.metrics.csv / .metrics.png and the checkpoints
result/s2_gnn_run_20.model_ckpt_ep_{epoch}.pth (epochs from 0), every --save_every epochs
and at the last.

    python s2_train_gnn.py --input_data ../data/s2_train.pkl.gz --training_proportion 0.9 \
        --learning_rate 0.001 --epochs 50 --batch_size 10 --hid 32 32 32 --log result/s2_gnn_run_1.log \
        --kmer 3 --embed_dim 16
"""
import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from stembb.checkpoint import S2_KIND, check_resume_args, load_checkpoint, save_checkpoint
from stembb.distributed import pick_device
from stembb.errors import InputError, run_main
from stembb.io import read_pickle, write_csv
from stembb.plots import plot_history
from stembb.runlog import start_run
from stembb.s1.dataset import split_by_sequence
from stembb.s2.engine import F1_THRESHOLDS, S2_COLUMNS, graphs_from_frame, run_epoch
from stembb.s2.gnn import S2_CONFIG_KEYS, build_s2_model

RESUME_KEYS = S2_CONFIG_KEYS + ("input_data", "training_proportion", "seed", "batch_size", "learning_rate")
PANELS = [("loss", "BCE on candidate pairs"), ("auroc", "auROC"), ("auprc", "auPRC")] + [
    (f"f1_at_{t}", f"F1 at p > {t}") for t in F1_THRESHOLDS]


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input_data", nargs="+", required=True, help="S2 feature pickles")
    p.add_argument("--training_proportion", type=float, default=0.9, help="share of sequences for training")
    p.add_argument("--learning_rate", type=float, default=0.001)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch_size", type=int, default=10)
    p.add_argument("--hid", type=int, nargs="+", default=[32, 32, 32], help="message-passing layer widths")
    p.add_argument("--log", type=Path, required=True, help="log file; outputs are written next to it")
    p.add_argument("--kmer", type=int, default=3)
    p.add_argument("--embed_dim", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save_every", type=int, default=10)
    p.add_argument("--resume", type=Path, default=None, help="S2 checkpoint to continue from")
    p.add_argument("--device", default=None)
    args = p.parse_args()
    args.input_data = [str(Path(d)) for d in args.input_data]
    if not 0 < args.training_proportion <= 1:
        raise InputError(f"--training_proportion must be in (0, 1], got {args.training_proportion}")
    for name in ("epochs", "batch_size", "kmer", "embed_dim", "save_every"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if any(h < 1 for h in args.hid):
        raise InputError("--hid values must be at least 1")
    return args


def output_prefix(log_path: Path) -> Path:
    return log_path.with_suffix("") if log_path.suffix == ".log" else log_path


def main():
    args = parse_args()
    args.log.parent.mkdir(parents=True, exist_ok=True)
    log = start_run("s2_train", args.seed, args.log)
    prefix = output_prefix(args.log)
    torch.manual_seed(args.seed)
    df = pd.concat([read_pickle(p, required=S2_COLUMNS) for p in args.input_data], ignore_index=True)
    df = df[df["stem_bb_bps"].map(len) > 0].reset_index(drop=True)
    if df.empty:
        raise InputError(f"{' '.join(args.input_data)}: no sequence with candidate pairs")
    train_idx, val_idx = split_by_sequence(df, 1 - args.training_proportion, args.seed)
    train_graphs = graphs_from_frame(df.iloc[train_idx], args.kmer)
    val_graphs = graphs_from_frame(df.iloc[val_idx], args.kmer)
    n_pos = int(sum(g["labels"].sum() for g in train_graphs))
    n_cand = sum(len(g["labels"]) for g in train_graphs)
    log.info("data: %d training / %d validation sequences; %d candidates, %d true pairs (%.1f%%)",
             len(train_graphs), len(val_graphs), n_cand, n_pos, 100 * n_pos / max(n_cand, 1))
    device = pick_device(args.device)
    config = {k: getattr(args, k) for k in S2_CONFIG_KEYS}
    model = build_s2_model(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    start, history = 0, []
    if args.resume:
        state = load_checkpoint(args.resume, S2_KIND, map_location=device)
        check_resume_args(args.resume, state["args"], args, RESUME_KEYS)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, history = state["epoch"] + 1, state["history"]
        log.info("resuming from %s (epoch %d done)", args.resume, state["epoch"])
    log.info("device: %s; parameters: %d", device, sum(p.numel() for p in model.parameters()))
    for epoch in range(start, args.epochs):
        rng = np.random.default_rng([args.seed, epoch])
        rows = [{"epoch": epoch, "split": "train",
                 **run_epoch(model, train_graphs, device, args.batch_size, optimizer, rng, epoch)}]
        if val_graphs:
            rows.append({"epoch": epoch, "split": "validation", **run_epoch(model, val_graphs, device, args.batch_size)})
        history += rows
        log.info("epoch %d: %s", epoch, " | ".join(
            f"{r['split']} loss {r['loss']:.4f} auROC {r['auroc']:.4f} auPRC {r['auprc']:.4f} F1@0.5 {r['f1_at_0.5']:.3f}"
            for r in rows))
        write_csv(pd.DataFrame(history), Path(f"{prefix}.metrics.csv"))
        plot_history(history, PANELS, Path(f"{prefix}.metrics.png"), ncols=3)
        if (epoch + 1) % args.save_every == 0 or epoch == args.epochs - 1:
            path = Path(f"{prefix}.model_ckpt_ep_{epoch}.pth")
            save_checkpoint({"kind": S2_KIND, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "args": vars(args) | {"log": str(args.log), "resume": None}, "config": config,
                             "epoch": epoch, "history": history}, path)
            log.info("saved %s", path)


if __name__ == "__main__":
    run_main(main)
