"""Train the grammar model (stembb.grammar.model), the loop grammar over every canonical
pair with S1's maps as optional evidence, by conditional log-likelihood of reference
structures (stembb.grammar.crf).

Reads structure pickles (seq, one_idx; a ``split`` column, as make_structure_dataset.py
writes, names the training and validation rows, and its test rows are never read;
without it --training_proportion splits by sequence). The loop terms start from an
energy-fitted S2 checkpoint (--init_terms, default the shipped models/stembb_s2.pth),
divided by kT (from a grammar checkpoint: the fit it was trained from), and are pulled
toward that start with strength --pull; --freeze_terms
keeps them fixed and trains only the pair bias and the evidence weights. With --s1_model,
each allowed pair gets S1's evidence (stembb.grammar.model.EVIDENCE) and its weights are
learned; without it the model is the grammar alone.

Each epoch records the training NLL and the validation F1 (MEA, gamma 1) in
<out>.metrics.csv / .png; the epoch with the best validation F1 is kept (the start when
none beats it), or the last with --keep_last. Then the decoder
(MEA or threshold, and its gamma or cut) is chosen on the validation split and stored in
the checkpoint (--out), which evaluation/predict_structure.py and run_end_to_end.py read
as --s2_model.

    python train_s2_grammar.py --data ../data/real/rfam.pkl.gz --out result/s2_grammar.pth --epochs 2 \\
        --lr 0.001 --pull 0.1
"""
import argparse
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from stembb.checkpoint import S2_GRAMMAR_KIND, load_checkpoint, save_checkpoint
from stembb.cli import HelpFormatter, check_at_least_one, check_outputs, check_positive, seed
from stembb.data.splits import train_val_rows
from stembb.distributed import pick_device
from stembb.errors import InputError, run_main
from stembb.io import read_pickle
from stembb.metrics import pair_scores
from stembb.pipeline import SHIPPED_S2, evidence_maps
from stembb.runlog import start_run
from stembb.s1.model import DEEP_NETWORKS
from stembb.s1.predict import load_s1_model
from stembb.grammar import crf
from stembb.grammar.assemble import MIN_LOOP
from stembb.grammar.model import EVIDENCE, decode_ensemble
from stembb.grammar.network import network_entry
from stembb.grammar.references import PRODUCIBLE_DROPS, domains, trainable_reference
from stembb.grammar.terms import LoopTerms
from stembb.s2.boxnet import KIND as BOX_KIND
from stembb.structure import crossing_pairs, pairs_from_one_idx
from stembb.train import record_epoch

GAMMAS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
PSEUDOKNOT_CUTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
CUTS = (0.2, 0.3, 0.4, 0.5)
PANELS = [("nll", "NLL per reference pair"), ("f1", "F1 (MEA, gamma 1)")]


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--data", type=Path, nargs="+", required=True, help="structure pickles (.pkl.gz)")
    p.add_argument("--extra_train", type=Path, nargs="+", default=[],
                   help="structure pickles used whole for training, none of them for validation (e.g. ViennaRNA-"
                        "labelled segments beside real structures)")
    p.add_argument("--out", type=Path, required=True, help="the S2 checkpoint to write (.pth)")
    p.add_argument("--s1_model", type=Path, default=None, help="S1 checkpoint whose maps are the evidence")
    p.add_argument("--init_terms", type=Path, default=SHIPPED_S2,
                   help="S2 checkpoint with energy-fitted loop terms (box kind) or a grammar checkpoint to continue")
    p.add_argument("--epochs", type=int, default=2, help="0 keeps the starting terms and only chooses the decoder")
    p.add_argument("--lr", "--learning_rate", dest="lr", type=float, default=0.001, help="Adam learning rate")
    p.add_argument("--evidence_lr", type=float, default=None, help="Adam learning rate of the S1 evidence weights "
                   "(default: --lr)")
    p.add_argument("--pull", type=float, default=0.1,
                   help="strength of the L2 pull of the loop terms toward --init_terms (per squared nat)")
    p.add_argument("--freeze_terms", action="store_true", help="train only the pair bias and evidence weights")
    p.add_argument("--deep_s1", choices=sorted(DEEP_NETWORKS), default=None,
                   help="train this deep S1 network (stembb.s1.model.DEEP_NETWORKS) through the partition function: "
                        "its pair logit is added to the pair score; the loop terms and pair bias of --init_terms "
                        "(a grammar checkpoint's own, not its anchor) are kept fixed, since the network reads "
                        "their ensemble")
    p.add_argument("--heads_weight", type=float, default=1.0,
                   help="weight of the deep S1's stem-box heads' loss beside the NLL")
    p.add_argument("--network_lr", type=float, default=0.001, help="Adam learning rate of the deep S1")
    p.add_argument("--keep_last", action="store_true",
                   help="keep the last epoch, not the one of best validation F1 (to report what training reached)")
    p.add_argument("--crop", type=int, default=None,
                   help="train on a structure longer than this as its domains of at most this many bases "
                        "(complete substructures; default: whole structures)")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--epoch_size", type=int, default=None,
                   help="train each epoch on this many training structures, drawn afresh (seeded) each epoch "
                        "(default: all of them)")
    p.add_argument("--training_proportion", type=float, default=0.9,
                   help="share of sequences for training when the data has no split column")
    p.add_argument("--threads", type=int, default=2, help="partition functions computed in parallel")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--device", default=None, help="device of the S1 forward passes")
    p.add_argument("--no_progress", action="store_true")
    return p


def read_splits(paths: list[Path], extra: list[Path], fraction: float, seed: int,
                log) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training and validation rows of ``paths`` (their split column, or by sequence),
    then every row of ``extra`` added to the training rows."""
    df = pd.concat([read_pickle(p) for p in paths], ignore_index=True)
    train, val, how = train_val_rows(df, 1 - fraction, seed)
    log.info("split: %s", how)
    where = ", ".join(map(str, paths))
    if not len(train) and not extra:
        raise InputError(f"{where}: no training rows ({how}); " + (
            "give families to training (make_structure_dataset.py --val_families, --test_families)"
            if "split" in df.columns else "raise --training_proportion"))
    if not len(val):
        raise InputError(f"{where}: no validation rows ({how}): the kept epoch and the decoder are chosen on them; " + (
            "make the data with validation families (make_structure_dataset.py --val_families)"
            if "split" in df.columns else "lower --training_proportion"))
    columns = ["seq", "one_idx"]
    train = pd.concat([df.iloc[train][columns]] + [read_pickle(p)[columns] for p in extra], ignore_index=True)
    return train, df.iloc[val].reset_index(drop=True)


def initial_model(path: Path, n_evidence: int, network: dict | None = None) -> tuple[crf.GrammarCRF, dict]:
    """A grammar model whose loop terms and pair bias start from, and are pulled toward,
    an energy fit in nats: a box checkpoint's energy-fitted terms divided by kT, or the
    fit a grammar checkpoint was itself trained from (its ``anchor``), so training from
    the shipped model repeats the training that made it. With a deep S1 (``network``,
    a config), a grammar checkpoint's own terms: they stay fixed under the network."""
    state = load_checkpoint(path, (BOX_KIND, S2_GRAMMAR_KIND))
    model = crf.GrammarCRF(n_evidence, network=network)
    if state["kind"] == S2_GRAMMAR_KIND:
        start = state["anchor"] if network is None else {k.removeprefix("terms."): v for k, v in
                                                         state["model"].items() if k.startswith("terms.")}
        with torch.no_grad():
            for name, value in start.items():
                getattr(model.terms, name).copy_(value)
    else:
        energy = LoopTerms()
        energy.load_state_dict({k.removeprefix("terms."): v for k, v in state["model"].items()
                                if k.startswith("terms.")})
        crf.set_energy_terms(model, energy)
    anchor = {n: p.detach().clone() for n, p in model.terms.named_parameters() if n != "pair_weight"}
    return model, anchor


def examples_of(model, df: pd.DataFrame, maps, train: bool, log, crop: int | None = None) -> list:
    """One ``Example`` per row. Training references are made producible first
    (``trainable_reference``; the pairs dropped are logged by reason) and those with
    no producible structure left out; with ``crop``, a longer one is trained on as its
    domains of at most ``crop`` bases (``domains``). Validation references are
    scored whole, as they are."""
    out, skipped, drops, cropped = [], Counter(), Counter(), 0
    for k, (seq, one_idx) in enumerate(zip(df["seq"], df["one_idx"])):
        full = ref = pairs_from_one_idx(one_idx)
        if not train:
            out.append(model.example(seq, None if maps is None else maps[k], ref))
            continue
        ref = trainable_reference(seq, ref, counts=drops)
        if ref is None or not ref:
            skipped["an interior loop longer than the grammar's" if ref is None else "no producible pair"] += 1
            continue
        windows = [(0, len(seq) - 1)] if crop is None else domains(ref, len(seq), crop)
        cropped += windows != [(0, len(seq) - 1)]
        for a, b in windows:
            part = [(i - a, j - a) for i, j in ref if a <= i and j <= b]
            p_on = None if maps is None else maps[k][a:b + 1, a:b + 1]
            out.append(model.example(seq[a:b + 1], p_on, part))
            out[-1].full_reference = [(i - a, j - a) for i, j in full if a <= i and j <= b]
    if train:
        log.info("training references made producible: %s; structures left out: %s%s",
                 ", ".join(f"{drops[why]} {why}" for why in PRODUCIBLE_DROPS),
                 ", ".join(f"{n} ({why})" for why, n in skipped.items()) or "none",
                 f"; {cropped} longer than --crop {crop} trained on as their domains" if crop else "")
    return out


def decoded_f1(examples, method: str, value: float, ensembles) -> float:
    """Mean F1 of the structures ``method`` (mea or threshold, at ``value``) decodes from ``ensembles``."""
    kw = {"gamma": value} if method != "threshold" else {"cut": value}
    return float(np.mean([pair_scores(decode_ensemble(en, e.seq, method, **kw), e.reference)["f1"]
                          for e, en in zip(examples, ensembles)]))


def choose_decoder(examples, ensembles) -> tuple[dict, dict]:
    """The decoder of best validation F1 (MEA over GAMMAS, threshold over CUTS)."""
    scores = {("mea", g): decoded_f1(examples, "mea", g, ensembles) for g in GAMMAS}
    scores |= {("threshold", c): decoded_f1(examples, "threshold", c, ensembles) for c in CUTS}
    method, value = max(scores, key=lambda k: (scores[k], k[0] == "mea"))
    return {"method": method, "gamma": value if method == "mea" else 1.0,
            "cut": value if method == "threshold" else 0.5}, {f"{m} {v}": f for (m, v), f in scores.items()}


def validation_ensembles(fold, examples: list, threads: int) -> list:
    """The pair probabilities of ``examples`` under ``fold`` (``model.folding()``), with
    its deep S1's scores when it has one."""
    fold.add_network_scores(examples, threads)
    return fold.ensembles(examples, threads)


def choose_pseudoknot_cut(fold, examples, ensembles, log) -> float | None:
    """The deep S1 pair map's cut for the pseudoknot layer (``PSEUDOKNOT_CUTS``): the
    best mean crossing-pair F1 over the pseudoknotted validation references among the
    cuts that do not lower their mean F1 below the nested answer's; None when no cut
    adds a crossing pair that is right, or there is no pseudoknotted reference."""
    knotted = [k for k, e in enumerate(examples) if crossing_pairs(e.reference)]
    if not knotted:
        log.info("pseudoknot layer: no pseudoknotted validation reference to choose its cut on")
        return None
    nested = {k: fold.decode(examples[k], ensembles[k]) for k in knotted}
    base = np.mean([pair_scores(nested[k], examples[k].reference)["f1"] for k in knotted])
    scores = {}
    for cut in PSEUDOKNOT_CUTS:
        fold.decoder = fold.decoder | {"pseudoknots": True, "pseudoknot_cut": cut}
        preds = {k: sorted(nested[k] + fold.pseudoknots(nested[k], ensembles[k], examples[k])) for k in knotted}
        scores[cut] = (np.mean([pair_scores(preds[k], examples[k].reference)["f1"] for k in knotted]),
                       np.mean([pair_scores(crossing_pairs(preds[k]), crossing_pairs(examples[k].reference))["f1"]
                                for k in knotted]))
    fold.decoder = fold.decoder | {"pseudoknots": False}
    log.info("pseudoknot layer on %d pseudoknotted validation references (nested F1 %.4f): %s", len(knotted), base,
             ", ".join(f"cut {c}: F1 {f:.4f}, crossing F1 {x:.4f}" for c, (f, x) in scores.items()))
    fair = [c for c, (f, x) in scores.items() if f >= base and x > 0]
    return max(fair, key=lambda c: scores[c][1]) if fair else None


def main(args) -> None:
    check_outputs([args.out], list(args.data) + list(args.extra_train) + [args.s1_model, args.init_terms])
    check_at_least_one(args, "batch_size", "threads", *(["epoch_size"] if args.epoch_size is not None else []))
    if not 0 < args.training_proportion < 1:
        raise InputError(f"--training_proportion must be in (0, 1), got {args.training_proportion}")
    if args.crop is not None and args.crop < 2 * MIN_LOOP + 4:
        raise InputError(f"--crop must be at least {2 * MIN_LOOP + 4} bases, got {args.crop}")
    if args.epochs < 0:
        raise InputError(f"--epochs must be at least 0 (0: the starting terms, decoder chosen), got {args.epochs}")
    check_positive(args, "lr", "evidence_lr", "network_lr")
    if args.heads_weight < 0:
        raise InputError(f"--heads_weight must be at least 0, got {args.heads_weight}")
    if args.deep_s1 and args.s1_model:
        raise InputError("--deep_s1 trains its own S1 inside the grammar model; leave out --s1_model")
    if args.pull < 0:
        raise InputError(f"--pull must be at least 0, got {args.pull}")
    log = start_run("train_s2_grammar", args.seed, args.out.with_suffix(".log"))
    torch.manual_seed(args.seed)
    train_df, val_df = read_splits(args.data, args.extra_train, args.training_proportion, args.seed, log)
    network = None if args.deep_s1 is None else asdict(DEEP_NETWORKS[args.deep_s1])
    model, anchor = initial_model(args.init_terms, len(EVIDENCE) if args.s1_model else 0, network)
    maps = {"train": None, "val": None}
    if args.s1_model is not None:
        device = pick_device(args.device)
        s1, _ = load_s1_model(args.s1_model, device)
        for name, df in (("train", train_df), ("val", val_df)):
            maps[name] = evidence_maps(s1, list(df["seq"]), device, show_progress=not args.no_progress)
    train = examples_of(model, train_df, maps["train"], True, log, args.crop)
    val = examples_of(model, val_df, maps["val"], False, log)
    log.info("%d training and %d validation structures", len(train), len(val))
    if not train:
        raise InputError(f"{', '.join(map(str, args.data))}: no training structure the grammar can produce is left "
                         "(see the log line above)")
    if model.network is not None:
        log.info("deep S1 %s (%d weights, receptive field %d nt) on the fixed grammar of %s", args.deep_s1,
                 sum(p.numel() for p in model.network.parameters()), DEEP_NETWORKS[args.deep_s1].receptive_field,
                 args.init_terms)
        grammar = model.folding(network=False)
    fixed = args.freeze_terms or model.network is not None
    groups = [] if model.network is not None else [{"params": [
        p for n, p in model.terms.named_parameters() if n != "pair_weight" and (not args.freeze_terms or n == "pair_bias")]}]
    if model.evidence is not None:
        groups.append({"params": list(model.evidence.parameters()), "lr": args.evidence_lr or args.lr})
    if model.network is not None:
        groups.append({"params": list(model.network.parameters()), "lr": args.network_lr})
    optimizer = torch.optim.Adam(groups, args.lr)
    rng = np.random.default_rng(args.seed)
    history: list = []
    val_ens = validation_ensembles(model.folding(), val, args.threads)
    best = (decoded_f1(val, "mea", 1.0, val_ens), -1, {k: v.clone() for k, v in model.state_dict().items()},
            val_ens)
    log.info("validation F1 before training (MEA, gamma 1): %.4f", best[0])
    for epoch in range(args.epochs):
        model.train()
        started, totals = time.perf_counter(), Counter()
        order = rng.permutation(len(train))[:args.epoch_size]
        batches = np.array_split(order, max(len(order) // args.batch_size, 1))
        for idx in tqdm(batches, desc=f"epoch {epoch}", disable=args.no_progress):
            if model.network is not None:  # a structure's view is computed the first time it is drawn
                grammar.add_grammar_views([train[k] for k in idx], args.threads)
            losses = crf.batch_losses(model, [train[k] for k in idx], args.threads)
            loss = losses["nll"] + args.heads_weight * losses.get("heads", 0.0)
            if not fixed:
                loss = loss + args.pull * crf.pull(model, anchor)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss at epoch {epoch}; lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            totals.update({name: value.item() * len(idx) for name, value in losses.items()})
        model.eval()
        val_ens = validation_ensembles(model.folding(), val, args.threads)
        f1 = decoded_f1(val, "mea", 1.0, val_ens)
        log.info("epoch %d: training NLL %.4f per reference pair%s, validation F1 %.4f (%.0f s)", epoch,
                 totals["nll"] / len(order),
                 f", stem-box heads' loss {totals['heads'] / len(order):.4f}" if "heads" in totals else "", f1,
                 time.perf_counter() - started)
        record_epoch(history, [{"epoch": epoch, "split": "train", "nll": totals["nll"] / len(order)},
                               {"epoch": epoch, "split": "val", "f1": f1}], PANELS,
                     args.out.with_suffix(".metrics.csv"), args.out.with_suffix(".metrics.png"), ncols=2)
        if f1 > best[0] or args.keep_last:
            best = (f1, epoch, {k: v.clone() for k, v in model.state_dict().items()}, val_ens)
    model.load_state_dict(best[2])
    log.info("kept epoch %d (validation F1 %.4f; -1 = the start)%s", best[1], best[0],
             " as --keep_last asks" if args.keep_last else "")
    if best[1] == -1 and model.network is not None:
        log.info("no epoch beat the grammar alone: the deep S1's pair head is as it started, 0 for every pair")
    decoder, scores = choose_decoder(val, best[3])  # the kept state's validation probabilities
    log.info("decoder chosen on validation: %s (F1 %.4f)", decoder,
             max(scores.values()))
    if model.network is not None:
        fold = model.folding(decoder)  # the kept state's pair maps, as the ensembles are
        cut = choose_pseudoknot_cut(fold, val, validation_ensembles(fold, val, args.threads), log)
        if cut is not None:  # off by default: --pseudoknots turns it on at this cut
            decoder["pseudoknot_cut"] = cut
            log.info("pseudoknot layer's cut on the pair map chosen on validation: %s", cut)
    weights = {k: v for k, v in model.state_dict().items() if not k.startswith("network.")}
    save_checkpoint({"kind": S2_GRAMMAR_KIND, "model": weights, "config": model.config, "args": vars(args),
                     "epoch": best[1], "history": history, "decode": decoder, "decode_scores": scores,
                     "evidence": list(EVIDENCE) if args.s1_model else [], "anchor": anchor,
                     "network": None if model.network is None else network_entry(model.network)}, args.out)
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    run_main(lambda: main(get_args_parser().parse_args()))
