"""Train S2 on S1 candidates (pickles of s1_pred_stem_processing.py; --features for gnn).

--model box (default): the box transformer, one token per distinct S1 box, relation-
biased attention between boxes (stembb.s2.boxnet; flags --dim --layers --heads --dropout
--max_boxes), decoded by the structure assembly with learned loop terms
(stembb.grammar.assemble). First the loop terms are fitted without the network: by default
(--terms_from_energies 20) by least squares to ViennaRNA's free energies of the MFE
structure and up to 20 Boltzmann samples of every training sequence (training time
only: prediction never calls ViennaRNA), and then they stay fixed; with
--terms_from_energies 0 by --terms_epochs of the structured margin loss (X.terms.csv /
.png), and they learn on through --struct_weight. Then --epochs train the network, whose
logits enter the pair scores with a weight: learned with --struct_weight, or, with frozen
terms, chosen from a grid on the validation split after training.
--model gnn: the notebook's graph network over bases and candidate pairs, kept as the
baseline (stembb.s2.gnn; flags --hid --kmer --embed_dim).

After the last epoch the structure-decoding knob gamma is chosen on the validation split
(best mean base-pair F1 of decoded structures) and stored in the checkpoint: prediction
scripts use it unless --gamma is given.

Outputs sit next to --log: with --log result/s2_gnn_run_20.log, the metrics are
result/s2_gnn_run_20.metrics.csv / .metrics.png and the checkpoints
result/s2_gnn_run_20.model_ckpt_ep_{epoch}.pth (epochs from 0), every --save_every epochs
and at the last.

    python train_s2_box.py --input_data ../data/s2_train.pkl.gz --training_proportion 0.9 \\
        --learning_rate 0.002 --epochs 1 --batch_size 16 --log result/s2_box_run_1.log
    python train_s2_box.py --input_data ../data/s2_train.pkl.gz --terms_from_energies 0 --struct_weight 1 \\
        --learning_rate 0.002 --epochs 5 --batch_size 16 --log result/s2_box_run_2.log
    python train_s2_box.py --model gnn --input_data ../data/s2_train.pkl.gz --training_proportion 0.9 \\
        --learning_rate 0.001 --epochs 50 --batch_size 10 --hid 32 32 32 --log result/s2_gnn_run_1.log \\
        --kmer 3 --embed_dim 16
"""
import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from stembb.checkpoint import checkpoint_epoch, init_weights, latest_checkpoint, save_checkpoint
from stembb.cli import HelpFormatter, check_at_least_one, check_positive, seed
from stembb.distributed import pick_device, synchronized_time
from stembb.errors import InputError, run_main
from stembb.io import read_pickle
from stembb.runlog import start_run
from stembb.train import checkpoint_state, is_save_epoch, load_resume, record_epoch, refuse_mixed_runs
from stembb.data.splits import train_val_rows
from stembb.s2.boxnet import BoxNetConfig
from stembb.grammar.energy_fit import fit_terms_to_energies
from stembb.s2.engine import (F1_THRESHOLDS, S2_MODELS, calibrate_gamma, calibrate_pair_weight, decoded_f1, fit_terms,
                               run_epoch)
from stembb.s2.gnn import GNNConfig
from stembb.structure import pairs_from_db, pairs_from_one_idx

TRAIN_KEYS = ("model", "input_data", "training_proportion", "seed", "batch_size", "learning_rate", "pos_weight",
              "struct_weight", "terms_lr_scale", "terms_epochs", "terms_lr", "terms_from_energies",
              "freeze_terms")
TERMS_EPOCHS = 12  # --terms_epochs of the box model when not given and not fitted to energies
TERMS_FROM_ENERGIES = 20  # --terms_from_energies of the box model when not given
PANELS = [("loss", "BCE on scored items"), ("auroc", "auROC"), ("auprc", "auPRC")] + [
    (f"f1_at_{t}", f"item F1 at p > {t}") for t in F1_THRESHOLDS] + [
    ("decoded_f1", "validation F1 of decoded structures")]
TERMS_PANELS = [("loss", "structured margin loss (loop terms alone)"),
                ("decoded_f1", "validation F1 of decoded structures")]
# each epoch, decoded F1 on the first validation sequences at a few gammas (the full
# calibration over GAMMA_GRID runs once, after the last epoch)
DECODED_F1_SEQS = 100
DECODED_F1_GAMMAS = (1.0, 4.0)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--data", "--input_data", dest="input_data", nargs="+", required=True, help="S2 feature pickles")
    p.add_argument("--model", choices=sorted(S2_MODELS), default="box", help="S2 network (default: box)")
    p.add_argument("--training_proportion", type=float, default=0.9, help="share of sequences for training")
    p.add_argument("--lr", "--learning_rate", dest="learning_rate", type=float, default=0.001)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch_size", type=int, default=10)
    p.add_argument("--pos_weight", type=float, default=1.0,
                   help="BCE weight of positive items (1 keeps probabilities calibrated; gamma absorbs the imbalance)")
    p.add_argument("--struct_weight", type=float, default=0.0,
                   help="weight of the structured margin loss on decoded structures (0: BCE only)")
    p.add_argument("--terms_lr_scale", type=float, default=60.0,
                   help="box: the assembly's loop terms learn this many times faster than the network")
    p.add_argument("--terms_epochs", type=int, default=None,
                   help="box: epochs fitting the loop terms alone before the network trains (default 12; "
                        "a fraction of a network epoch each)")
    p.add_argument("--terms_lr", type=float, default=0.1, help="box: Adam learning rate of --terms_epochs")
    p.add_argument("--terms_from_energies", type=int, default=None, metavar="SAMPLES",
                   help="box: fit the loop terms to ViennaRNA's energies of each training sequence's MFE structure "
                        "and up to SAMPLES Boltzmann samples, then keep them fixed (default 20; 0: learn them "
                        "from the structures alone, --terms_epochs)")
    p.add_argument("--workers", type=int, default=1, help="box: processes folding for --terms_from_energies")
    p.add_argument("--freeze_terms", action=argparse.BooleanOptionalAction, default=None,
                   help="box: keep the loop terms fixed while the network trains (BCE only), then choose the weight "
                        "of its logits in the pair score on the validation split; default: on when they were "
                        "fitted to energies")
    gnn, box = GNNConfig(), BoxNetConfig()
    p.add_argument("--hid", type=int, nargs="+", default=list(gnn.hid), help="gnn: message-passing layer widths")
    p.add_argument("--kmer", type=int, default=gnn.kmer, help="gnn: k-mer length of base embeddings")
    p.add_argument("--embed_dim", type=int, default=gnn.embed_dim, help="gnn: k-mer embedding width")
    p.add_argument("--dim", type=int, default=box.dim, help="box: token width")
    p.add_argument("--layers", type=int, default=box.layers, help="box: attention layers")
    p.add_argument("--heads", type=int, default=box.heads, help="box: attention heads (divides --dim)")
    p.add_argument("--dropout", type=float, default=box.dropout, help="box: dropout in [0, 1)")
    p.add_argument("--max_boxes", type=int, default=box.max_boxes,
                   help="box: S1 boxes kept per sequence (most evidence first)")
    p.add_argument("--log", type=Path, required=True, help="log file; outputs are written next to it")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--save_every", type=int, default=10)
    p.add_argument("--resume", type=Path, default=None, help="S2 checkpoint, or the --log of a run, to continue")
    p.add_argument("--init", type=Path, default=None,
                   help="start from this S2 checkpoint's weights (same --model and sizes; fresh optimizer and epochs)")
    p.add_argument("--device", default=None)
    p.add_argument("--no_progress", action="store_true")
    return p


def check_args(args) -> None:
    args.input_data = [str(Path(d)) for d in args.input_data]
    if not 0 < args.training_proportion <= 1:
        raise InputError(f"--training_proportion must be in (0, 1], got {args.training_proportion}")
    check_at_least_one(args, "epochs", "batch_size", "kmer", "embed_dim", "save_every", "dim", "layers", "heads",
                       "max_boxes", "workers")
    if any(h < 1 for h in args.hid):
        raise InputError("--hid values must be at least 1")
    check_positive(args, "learning_rate", "terms_lr_scale", "pos_weight", "terms_lr")
    if args.terms_from_energies is None:
        args.terms_from_energies = TERMS_FROM_ENERGIES if args.model == "box" and not args.init else 0
    if args.terms_epochs is None:
        args.terms_epochs = TERMS_EPOCHS if args.model == "box" and not args.terms_from_energies and not args.init else 0
    if args.freeze_terms is None:
        args.freeze_terms = bool(args.terms_from_energies)
    if args.freeze_terms and args.struct_weight:
        raise InputError("--struct_weight trains the loop terms, which --freeze_terms keeps fixed "
                         "(the default with --terms_from_energies): give one")
    for flag in ("terms_epochs", "terms_from_energies"):
        if getattr(args, flag) < 0:
            raise InputError(f"--{flag} must be at least 0, got {getattr(args, flag)}")
        if getattr(args, flag) and args.model != "box":
            raise InputError(f"--{flag} fits the box model's loop terms; --model gnn has none")
    if args.struct_weight < 0:
        raise InputError(f"--struct_weight must be at least 0, got {args.struct_weight}")
    if args.struct_weight and args.model != "box":
        raise InputError("--struct_weight trains the box model's structure assembly; --model gnn has none")
    if not 0 <= args.dropout < 1:
        raise InputError(f"--dropout must be in [0, 1), got {args.dropout}")
    if args.init and args.resume:
        raise InputError("--init starts a new run from a checkpoint's weights, --resume continues one: give one")
    if args.dim % args.heads:
        raise InputError(f"--dim {args.dim} must be a multiple of --heads {args.heads}")


def param_groups(model, lr: float, terms_lr_scale: float, freeze_terms: bool = False) -> list[dict]:
    """Adam groups: the box transformer's few loop terms (``model.terms``) learn
    ``terms_lr_scale`` times faster than the network, whose per-pair logits would
    otherwise swamp them for many epochs. With ``freeze_terms`` none of them learns (the
    weight of the logits is calibrated after training)."""
    terms = list(model.terms.parameters()) if hasattr(model, "terms") else []
    ids = {id(p) for p in terms}
    groups = [{"params": [p for p in model.parameters() if id(p) not in ids], "lr": lr}]
    for p in terms:
        p.requires_grad_(not freeze_terms)
    return groups + ([{"params": [] if freeze_terms else terms, "lr": lr * terms_lr_scale}] if terms else [])


def output_prefix(log_path: Path) -> Path:
    return log_path.with_suffix("") if log_path.suffix == ".log" else log_path


def resume_checkpoint(path: Path) -> Path:
    """A checkpoint path from --resume: the checkpoint itself, a run's --log, or its folder."""
    if path.is_file() and path.suffix == ".pth":
        return path
    if path.is_dir():
        found = latest_checkpoint(path)
    else:
        prefix = output_prefix(path)
        found = max(prefix.parent.glob(f"{prefix.name}.model_ckpt_ep_*.pth"), key=checkpoint_epoch, default=None)
    if found is None:
        raise InputError(f"{path}: --resume names no S2 checkpoint, run log or run folder with checkpoints")
    return found


def main(args) -> None:
    check_args(args)
    spec = S2_MODELS[args.model]
    config_keys = spec.config_keys
    state = None
    if args.resume:
        args.resume = resume_checkpoint(args.resume)
        state = load_resume(args.resume, spec.kind, args, TRAIN_KEYS + config_keys, args.epochs, "--epochs")
    prefix = output_prefix(args.log)
    refuse_mixed_runs(prefix.parent.glob(f"{prefix.name}.model_ckpt_ep_*.pth"), args.resume, prefix.parent)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    log = start_run("s2_train", args.seed, args.log)
    torch.manual_seed(args.seed)
    df = pd.concat([read_pickle(p, required=spec.columns) for p in args.input_data], ignore_index=True)
    n_items = df[spec.columns[-1]].map(len)
    df = df[n_items > 0].reset_index(drop=True)
    if df.empty:
        raise InputError(f"{' '.join(args.input_data)}: no sequence with S1 candidates")
    train_idx, val_idx, how = train_val_rows(df, 1 - args.training_proportion, args.seed)
    log.info("split: %s", how)
    config = {k: getattr(args, k) for k in config_keys}
    rows = df.to_dict("records")
    examples = [spec.from_row(r, config) for r in tqdm(rows, desc="S2 examples", disable=args.no_progress)]
    train = [examples[k] for k in train_idx]
    val = [examples[k] for k in val_idx]
    val_refs = [pairs_from_one_idx(rows[k]["one_idx"]) for k in val_idx]
    labels = np.concatenate([np.asarray(e["labels"]) for e in train])
    log.info("data: %d training / %d validation sequences; %d %s items, %d positive (%.1f%%); --pos_weight %g",
             len(train), len(val), len(labels), args.model, int(labels.sum()), 100 * labels.mean(), args.pos_weight)
    device = pick_device(args.device)
    model = spec.build(config).to(device)
    if state is not None:
        model.load_state_dict(state["model"])
    elif args.init:
        init_weights(model, args.init, spec.kind, config, ignore=("dropout", "max_boxes"))
        log.info("weights from %s (--init); new optimizer, epoch 0", args.init)
    log.info("device: %s; %s network, %d parameters", device, args.model, sum(p.numel() for p in model.parameters()))
    if state is None and args.terms_from_energies:
        fit_terms_from_energies(model, spec, train, val, val_refs, args, log)
    if state is None and args.terms_epochs:
        fit_loop_terms(model, spec, train, val, val_refs, args, prefix, log)
    optimizer = torch.optim.Adam(param_groups(model, args.learning_rate, args.terms_lr_scale, args.freeze_terms))
    start, history = 0, []
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        start, history = state["epoch"] + 1, state["history"]
        log.info("resuming from %s (epoch %d done)", args.resume, state["epoch"])
    val_logits = None
    for epoch in range(start, args.epochs):
        rng = np.random.default_rng([args.seed, epoch])
        started = synchronized_time(device)
        metrics, _ = run_epoch(model, spec, train, device, args.batch_size, optimizer, rng, epoch, args.pos_weight,
                               args.struct_weight)
        metrics["sequences_per_s"] = len(train) / (synchronized_time(device) - started)
        epoch_rows = [{"epoch": epoch, "split": "train", **metrics}]
        if val:
            metrics, val_logits = run_epoch(model, spec, val, device, args.batch_size, pos_weight=args.pos_weight)
            n = min(len(val), DECODED_F1_SEQS)
            metrics["decoded_f1"] = max(decoded_f1(model, spec, val[:n], val_logits[:n], val_refs[:n], g)
                                        for g in DECODED_F1_GAMMAS)
            epoch_rows.append({"epoch": epoch, "split": "validation", **metrics})
        log.info("epoch %d: %s", epoch, " | ".join(
            f"{r['split']} loss {r['loss']:.4f} auROC {r['auroc']:.4f} auPRC {r['auprc']:.4f} F1@0.5 {r['f1_at_0.5']:.3f}"
            + (f" decoded F1 {r['decoded_f1']:.3f}" if "decoded_f1" in r else "")
            + (f" ({r['sequences_per_s']:.1f} sequences/s)" if "sequences_per_s" in r else "") for r in epoch_rows))
        record_epoch(history, epoch_rows, PANELS, Path(f"{prefix}.metrics.csv"), Path(f"{prefix}.metrics.png"), ncols=3)
        last = epoch == args.epochs - 1
        if is_save_epoch(epoch, args.save_every, args.epochs):
            calibration = calibrate(model, spec, val, val_logits, val_refs, args, log) if last else {}
            ckpt = checkpoint_state(spec.kind, model, optimizer, args, config, epoch, history) | calibration
            path = Path(f"{prefix}.model_ckpt_ep_{epoch}.pth")
            save_checkpoint(ckpt, path)
            log.info("saved %s", path)


def terms_only_f1(model, spec, val, val_refs) -> float | None:
    """Mean decoded F1 at gamma 1 of the first validation sequences with the network's
    logits left out (``pair_weight`` is 0 while the loop terms are fitted); None without
    a validation split."""
    n = min(len(val), DECODED_F1_SEQS)
    return decoded_f1(model, spec, val[:n], [np.zeros(spec.n_items(e)) for e in val[:n]], val_refs[:n], 1.0) if n else None


def fit_terms_from_energies(model, spec, train, val, val_refs, args, log) -> None:
    """``--terms_from_energies``: the loop terms fitted to ViennaRNA's free energies of each
    training sequence's MFE structure and Boltzmann samples
    (``stembb.grammar.energy_fit.fit_terms_to_energies``), drawn with seeds from ``--seed``."""
    from stembb.data.folding import sampled_energies_of  # ViennaRNA: only this step needs it

    started = time.perf_counter()
    seqs = [e["seq"] for e in train]
    folded = sampled_energies_of(seqs, args.terms_from_energies, args.seed, args.workers, not args.no_progress)
    samples = [(seq, [pairs_from_db(s) for s in structures], energies) for seq, (structures, energies) in zip(seqs, folded)]
    rmse = fit_terms_to_energies(model.terms, samples)
    f1 = terms_only_f1(model, spec, val, val_refs)
    log.info("loop terms fitted to the energies of %d structures of %d sequences: error %.3f kcal/mol%s (%.0f s)",
             sum(len(s[1]) for s in samples), len(samples), rmse,
             f" | validation decoded F1 {f1:.3f}" if f1 is not None else "", time.perf_counter() - started)


def fit_loop_terms(model, spec, train, val, val_refs, args, prefix: Path, log) -> None:
    """``--terms_epochs``: the loop terms alone (``stembb.s2.engine.fit_terms``), with the
    training loss and the validation F1 of decoded structures (network unused) per epoch
    in ``X.terms.csv`` / ``X.terms.png``."""
    history: list[dict] = []

    def on_epoch(epoch: int, loss: float) -> None:
        rows = [{"epoch": epoch, "split": "train", "loss": loss}]
        f1 = terms_only_f1(model, spec, val, val_refs)
        if f1 is not None:
            rows.append({"epoch": epoch, "split": "validation", "decoded_f1": f1})
        log.info("loop terms epoch %d: train structured loss %.4f%s", epoch, loss,
                 f" | validation decoded F1 {f1:.3f}" if f1 is not None else "")
        record_epoch(history, rows, TERMS_PANELS, Path(f"{prefix}.terms.csv"), Path(f"{prefix}.terms.png"), ncols=2)

    started = time.perf_counter()
    fit_terms(model, train, args.terms_epochs, args.terms_lr, args.batch_size, args.seed, on_epoch)
    log.info("loop terms fitted in %.0f s", time.perf_counter() - started)


def calibrate(model, spec, val, val_logits, val_refs, args, log) -> dict:
    """Checkpoint entries ``decode_gamma`` / ``gamma_scores``: gamma with the best mean
    decoded F1 on the validation split (1.0 without one). With --freeze_terms, first the
    weight of the network's logits in the pair score, the same way."""
    if not val:
        log.info("no validation split: decoding gamma left at 1.0 (pass --gamma at prediction)")
        return {"decode_gamma": 1.0, "gamma_scores": {}}
    if args.model == "box" and args.freeze_terms:
        weight, scores = calibrate_pair_weight(model, spec, val, val_logits, val_refs)
        log.info("weight of the network's logits %g: validation mean F1 %.3f at gamma 1 (%s)", weight, scores[weight],
                 ", ".join(f"{w:g}: {f:.3f}" for w, f in scores.items()))
    gamma, scores = calibrate_gamma(model, spec, val, val_logits, val_refs)
    log.info("decoding gamma %g: validation mean F1 %.3f (%s)", gamma, scores[gamma],
             ", ".join(f"{g:g}: {f:.3f}" for g, f in scores.items()))
    return {"decode_gamma": float(gamma), "gamma_scores": {float(g): float(f) for g, f in scores.items()}}


if __name__ == "__main__":
    run_main(lambda: main(get_args_parser().parse_args()))
