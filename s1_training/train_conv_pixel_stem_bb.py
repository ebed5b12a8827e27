"""Train the S1 conv-pixel stem-box network.

Single process (CPU, or the GPU CUDA_VISIBLE_DEVICES shows):
    python train_conv_pixel_stem_bb.py --data ../data/s1_train_multi_structs_len40_20000.pkl.gz \\
        --result result/run_25 --num_filters 128 128 --filter_width 9 9 --hid_shared 50 50 50 \\
        --hid_output 20 --lr 0.0005 --epoch 50 --mask 0 --local_unmask_offset 4 --batch_size 10 \\
        --max_length 200 --cpu 4
Several processes (DistributedDataParallel; NCCL on GPUs, gloo on CPU):
    torchrun --nproc_per_node 2 train_conv_pixel_stem_bb.py <same flags>

Writes to --result: run.log, metrics.csv (one row per epoch and split), metrics.png,
and model_ckpt_ep_{epoch}.pth (epochs from 0) every --save_every epochs and at the end.
"""
import argparse
from pathlib import Path

import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from stembb.checkpoint import S1_KIND, init_weights, latest_checkpoint, save_checkpoint
from stembb.cli import HelpFormatter, check_at_least_one, check_positive, seed
from stembb.distributed import barrier, cleanup, init_distributed
from stembb.s1.engine import evaluate, train_one_epoch
from stembb.errors import InputError, loader_worker_start, run_main
from stembb.io import read_pickle
from stembb.s1.model import CONFIG_KEYS, S1Config, build_model
from stembb.runlog import start_run
from stembb.train import checkpoint_state, is_save_epoch, load_resume, record_epoch, refuse_mixed_runs
from stembb.data.splits import train_val_rows
from stembb.s1.dataset import LengthBatchSampler, StemBoxDataset, collate, filter_rows

DIVERGED_LOSS = 1000.0  # the five losses of an untrained network sum to about 10

# Flags a resumed run must share with its checkpoint: they define the network, the data,
# the split and the loss. The rest (epochs, workers, device, saving) may change.
RESUME_KEYS = CONFIG_KEYS + ("data", "mask", "local_unmask_offset", "max_length", "val_fraction", "seed",
                             "batch_size", "lr")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--data", nargs="+", required=True, help="one or more training pickles")
    p.add_argument("--result", type=Path, required=True, help="run folder")
    p.add_argument("--num_filters", type=int, nargs="+", required=True)
    p.add_argument("--filter_width", type=int, nargs="+", required=True)
    p.add_argument("--hid_shared", type=int, nargs="*", default=list(S1Config.hid_shared))
    p.add_argument("--hid_output", type=int, default=S1Config.hid_output)
    p.add_argument("--dropout", type=float, default=S1Config.dropout)
    p.add_argument("--mask", type=float, default=0.0,
                   help="on/off loss weight outside the unmasked region (0 = ignore)")
    p.add_argument("--local_unmask_offset", type=int, default=4,
                   help="grow every local-structure box by this many pixels per side for the unmasked region")
    p.add_argument("--epochs", "--epoch", dest="epoch", type=int, default=10, help="number of epochs")
    p.add_argument("--lr", type=float, default=0.001)
    p.add_argument("--batch_size", type=int, default=10)
    p.add_argument("--max_length", type=int, default=200, help="drop longer sequences")
    p.add_argument("--workers", "--cpu", dest="cpu", type=int, default=2, help="data-loader worker processes")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--save_every", type=int, default=10, help="checkpoint every N epochs (and the last)")
    p.add_argument("--resume", type=Path, default=None, help="checkpoint, or run folder (its latest checkpoint)")
    p.add_argument("--init", type=Path, default=None,
                   help="start from this S1 checkpoint's weights (same architecture; fresh optimizer and epochs)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when available)")
    p.add_argument("--amp", nargs="?", const="fp16", choices=("fp16", "bf16"), default=None,
                   help="mixed precision on CUDA: --amp (or --amp fp16) with a loss scaler, --amp bf16 without")
    p.add_argument("--val_fraction", type=float, default=0.05)
    p.add_argument("--no_progress", action="store_true", help="no progress bars (logs only)")
    return p


def check_args(args) -> None:
    """Semantic flag checks, each a one-line InputError before anything runs."""
    args.data = [str(Path(d)) for d in args.data]
    if len(args.num_filters) != len(args.filter_width):
        raise InputError(f"--num_filters has {len(args.num_filters)} values but --filter_width has "
                         f"{len(args.filter_width)}: give one width per conv layer")
    for name in ("num_filters", "filter_width", "hid_shared"):
        if any(v < 1 for v in getattr(args, name)):
            raise InputError(f"--{name} values must be at least 1")
    check_at_least_one(args, "epoch", "batch_size", "max_length", "save_every", "hid_output")
    check_positive(args, "lr")
    if not 0 <= args.dropout < 1:
        raise InputError(f"--dropout must be in [0, 1), got {args.dropout}")
    if not 0 <= args.mask <= 1:
        raise InputError(f"--mask must be in [0, 1], got {args.mask}")
    if not 0 <= args.val_fraction < 1:
        raise InputError(f"--val_fraction must be in [0, 1), got {args.val_fraction}")
    if args.init and args.resume:
        raise InputError("--init starts a new run from a checkpoint's weights, --resume continues one: give one")
    if args.cpu < 0 or args.local_unmask_offset < 0:
        raise InputError("--cpu and --local_unmask_offset must not be negative")


def load_data(args, log):
    frames = [read_pickle(path, required=("seq", "bounding_boxes"), check_letters=False) for path in args.data]
    columns = ["seq", "bounding_boxes"] + (["split"] if all("split" in f.columns for f in frames) else [])
    df = pd.concat([f[columns] for f in frames], ignore_index=True)
    df, dropped = filter_rows(df, args.max_length)
    log.info("data: %d rows kept; dropped: %s", len(df), ", ".join(f"{n} {why}" for why, n in dropped.items()))
    if df.empty:
        raise InputError(f"{' '.join(args.data)}: no rows left after filtering (see dropped counts above)")
    train_idx, val_idx, how = train_val_rows(df, args.val_fraction, args.seed)
    log.info("split: %d training rows, %d validation rows (%s)", len(train_idx), len(val_idx), how)
    return df, train_idx, val_idx


def make_loader(df, idx, args, shuffle, dist_info, device):
    sub = df.iloc[idx]
    dataset = StemBoxDataset(sub["seq"].tolist(), sub["bounding_boxes"].tolist(), args.local_unmask_offset)
    sampler = LengthBatchSampler(sub["seq"].str.len().to_numpy(), args.batch_size, shuffle, args.seed,
                                 dist_info.world_size, dist_info.rank)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=args.cpu,
                        worker_init_fn=loader_worker_start,
                        pin_memory=device.type == "cuda", persistent_workers=args.cpu > 0)
    return loader, sampler


def resume_state(args, log):
    path = latest_checkpoint(args.resume) if args.resume.is_dir() else args.resume
    if path is None:
        raise InputError(f"{args.resume}: no model_ckpt_ep_*.pth to resume from")
    state = load_resume(path, S1_KIND, args, RESUME_KEYS, args.epoch, "--epoch")
    log.info("resuming from %s (epoch %d done)", path, state["epoch"])
    return state


S1_PANELS = [("loss", "summed loss"), ("stem_on_auroc", "stem_on auROC"), ("stem_on_auprc", "stem_on auPRC"),
             ("location_x_acc", "location x accuracy"), ("location_y_acc", "location y accuracy"),
             ("sm_size_acc", "size (softmax) accuracy"), ("sl_size_mae", "size (scalar) MAE")]


def main(args) -> None:
    check_args(args)
    dist_info, device = init_distributed(args.device)
    finished = False
    try:
        train(args, dist_info, device)
        finished = True
    finally:
        cleanup(dist_info, finished)  # no barrier after a failure: the other rank may never arrive


def train(args, dist_info, device):
    is_main = dist_info.is_main
    resume = latest_checkpoint(args.resume) if args.resume and args.resume.is_dir() else args.resume
    refuse_mixed_runs(args.result.glob("model_ckpt_ep_*.pth"), resume, args.result)
    if is_main:
        args.result.mkdir(parents=True, exist_ok=True)
    log = start_run(f"s1_train_rank{dist_info.rank}", args.seed, args.result / "run.log" if is_main else None)
    if not is_main:
        log.setLevel("WARNING")
    torch.manual_seed(args.seed)
    config = {k: getattr(args, k) for k in CONFIG_KEYS}
    state = resume_state(args, log) if args.resume else None
    df, train_idx, val_idx = load_data(args, log)
    model = build_model(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    start_epoch, history = 0, []
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, history = state["epoch"] + 1, state["history"]
    elif args.init:
        init_weights(model, args.init, S1_KIND, config)
        log.info("weights from %s (--init); new optimizer, epoch 0", args.init)
    log.info("device: %s%s; processes: %d; parameters: %d", device,
             f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "",
             dist_info.world_size, sum(p.numel() for p in model.parameters()))
    if dist_info.enabled:
        log.info("torch.distributed backend: %s", torch.distributed.get_backend())
    net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
        if dist_info.enabled else model
    scaler = None
    if args.amp and device.type != "cuda":
        log.warning("--amp needs CUDA; training in float32 on %s", device)
    elif args.amp == "fp16":
        scaler = torch.amp.GradScaler("cuda")
        if state and state.get("scaler"):  # a resumed run keeps its loss scale
            scaler.load_state_dict(state["scaler"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # lengths are bucketed, so few distinct shapes
    train_loader, train_sampler = make_loader(df, train_idx, args, True, dist_info, device)
    val_loader = make_loader(df, val_idx, args, False, dist_info, device)[0] if len(val_idx) else None
    show = is_main and not args.no_progress
    for epoch in range(start_epoch, args.epoch):
        train_sampler.set_epoch(epoch)
        splits = {"train": train_one_epoch(net, optimizer, train_loader, device, epoch, args.mask, scaler, show,
                                            args.amp)}
        if val_loader is not None:
            splits["validation"] = evaluate(net, val_loader, device, args.mask, show)
        for metrics in splits.values():
            if dist_info.enabled:
                metrics.all_reduce()
        rows = [{"epoch": epoch, "split": split, **m.compute()} for split, m in splits.items()]
        if is_main:
            log.info("epoch %d: %s", epoch, " | ".join(
                f"{r['split']} loss {r['loss']:.4f} auROC {r['stem_on_auroc']:.4f} auPRC {r['stem_on_auprc']:.4f} "
                f"loc_x {r['location_x_acc']:.3f} loc_y {r['location_y_acc']:.3f} size {r['sm_size_acc']:.3f}"
                + (f" ({r['examples_per_s']:.1f} examples/s per process after warm-up)" if "examples_per_s" in r else "")
                for r in rows))
            record_epoch(history, rows, S1_PANELS, args.result / "metrics.csv", args.result / "metrics.png")
            if rows[0]["loss"] > DIVERGED_LOSS:
                log.warning("warning: training loss %.3g (an untrained network's is about 10): the run is diverging; "
                            "--lr %g is likely too high", rows[0]["loss"], args.lr)
            if is_save_epoch(epoch, args.save_every, args.epoch):
                path = args.result / f"model_ckpt_ep_{epoch}.pth"
                save_checkpoint(checkpoint_state(S1_KIND, model, optimizer, args, config, epoch, history, scaler),
                                path)
                log.info("saved %s", path)
        barrier(dist_info)


if __name__ == "__main__":
    run_main(lambda: main(get_args_parser().parse_args()))
