"""Prediction from checkpoints: ``predictor_from_checkpoints`` reads an S2 checkpoint's
kind without torch and returns the predictor of that kind. A grammar model folds in
``GrammarPredictor`` with numpy alone, and loads S1 (and torch) only when its evidence
has a weight (the shipped model's has none); the two-stage box models run in
``stembb.s2.predictor.BoxPredictor``. Also the predictor flags every end-to-end script
shares, refused where the chosen model would not read them."""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence, Union

import numpy as np

from stembb import memory
from stembb.checkpoint import S2_BOX_KIND, S2_GNN_KIND, S2_GRAMMAR_KIND, read_arrays
from stembb.cli import check_at_least_one, check_positive, check_threshold
from stembb.errors import InputError
from stembb.grammar.assemble import MIN_LOOP
from stembb.grammar.model import DECODERS, GrammarFold, fold_memory
from stembb.grammar.partition import Ensemble
from stembb.grammar.pseudoknots import PSEUDOKNOT_CUT
from stembb.io import REPO_ROOT
from stembb.sequences import check_sequence_list

if TYPE_CHECKING:
    from stembb.s2.predictor import BoxPredictor

S2_CHECKPOINT_KINDS = (S2_BOX_KIND, S2_GNN_KIND, S2_GRAMMAR_KIND)
# S1's forward pass on one sequence, per pixel of its L x L image (the small network of
# models/stembb_s1.pth, VmHWM at 400 and 800 nt: 820 and 460 bytes)
S1_BYTES_PER_PIXEL = 500
SMALL_FOLDS = 64 * 2 ** 20  # bytes: folds that need less together are not checked against the memory available


def usable_cores() -> int:
    """The cores this process may run on (``taskset`` and a scheduler's CPU set narrow it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def evidence_maps(s1_model, seqs: Sequence[str], device, batch_size: int = 16,
                  show_progress: bool = False) -> list[np.ndarray]:
    """S1's ``p_on`` map (L, L) of each sequence: the grammar model's evidence."""
    from stembb.s1.predict import iter_maps
    out: list = [None] * len(seqs)
    for k, maps in iter_maps(s1_model, seqs, device, batch_size, show_progress):
        out[k] = maps["p_on"]
    return out


@dataclass
class GrammarPredictor:
    """A grammar model (``GrammarFold``, which owns its terms and decoder settings) and,
    only when its evidence has a weight, the S1 network that gives it (on ``device``,
    ``batch_size`` sequences per forward pass). Folds ``threads`` sequences at once
    where the memory allows (``folds_at_once``); ``timings`` accumulate seconds per step."""

    model: GrammarFold
    s1_model: object = None
    device: object = "cpu"
    batch_size: int = 16
    threads: int = field(default_factory=usable_cores)
    span_hint: str = "pass a smaller --max_span (RNAfold's --maxBPspan; e.g. 300)"  # how the caller limits spans
    timings: dict = field(default_factory=lambda: {"s1_forward": 0.0, "s2": 0.0, "structure": 0.0})

    is_grammar = True

    @property
    def reads_s1(self) -> bool:
        return self.model.uses_evidence

    @property
    def decoder(self) -> dict:
        return self.model.decoder

    @decoder.setter
    def decoder(self, settings: dict) -> None:
        self.model.decoder = settings

    def predict(self, seqs: Sequence[str]) -> list[list[tuple[int, int]]]:
        """One structure (sorted 0-based pairs) per sequence (``check_sequence_list``)."""
        check_sequence_list(seqs, "Predictor.predict")
        return self.predict_checked(seqs)

    def predict_checked(self, seqs: Sequence[str]) -> list[list[tuple[int, int]]]:
        """``predict`` of sequences its caller has already checked."""
        return self.fold_checked(seqs)[0]

    def fold(self, seqs: Sequence[str], names: Sequence[str] | None = None
             ) -> tuple[list[list[tuple[int, int]]], list[Ensemble], list[float]]:
        """One structure per sequence, its pair probabilities, and the structure's score
        as a pseudo free energy (``GrammarFold.energy``, kcal/mol; of its nested part,
        when the pseudoknot layer adds crossing stems). The sequences are
        checked (``check_sequence_list``), and a sequence whose folding would not fit in
        the memory available is a one-line InputError naming it (``names``, default
        "sequence k"), before any work."""
        check_sequence_list(seqs, "Predictor.fold")
        return self.fold_checked(seqs, names)

    def fold_checked(self, seqs: Sequence[str], names: Sequence[str] | None = None
                     ) -> tuple[list[list[tuple[int, int]]], list[Ensemble], list[float]]:
        """``fold`` of sequences its caller has already checked."""
        threads = self.folds_at_once(seqs, names)
        t = time.perf_counter()
        maps = self.evidence(seqs) if self.model.uses_evidence else [None] * len(seqs)
        self.timings["s1_forward"] += time.perf_counter() - t
        t = time.perf_counter()
        examples = [self.model.example(seq, p_on) for seq, p_on in zip(seqs, maps)]
        made = time.perf_counter()
        self.model.add_network_scores(examples, threads)  # a deep S1's pair logits, when the model has one
        scored = time.perf_counter()
        self.timings["s1_forward"] += scored - made
        ensembles = self.model.ensembles(examples, threads)
        self.timings["s2"] += made - t + time.perf_counter() - scored
        t = time.perf_counter()
        nested = [self.model.decode(e, ens) for e, ens in zip(examples, ensembles)]
        energies = [self.model.energy(e, y) for e, y in zip(examples, nested)]
        out = [sorted(y + self.model.pseudoknots(y, ens, e)) for y, ens, e in zip(nested, ensembles, examples)]
        self.timings["structure"] += time.perf_counter() - t
        return out, ensembles, energies

    def evidence(self, seqs: Sequence[str]) -> list[np.ndarray]:
        import torch
        with torch.no_grad():
            return evidence_maps(self.s1_model, seqs, self.device, self.batch_size)

    def warm_up(self) -> None:
        """Fold one short sequence, so that the one-off cost of loading the compiled
        passes is not counted in the first record's time."""
        self.predict(["GGGGAAACCCC"])

    def folds_at_once(self, seqs: Sequence[str], names: Sequence[str] | None = None) -> int:
        """How many partition functions may run at once (at most ``threads``): as many
        as the largest folds fit in the memory available together (``fold_memory``;
        not checked where the system does not say, nor for folds that need less than
        ``SMALL_FOLDS`` together, which reading the system's numbers would slow more
        than folding them). InputError for the first sequence whose fold alone needs more."""
        span = self.model.max_span
        needs = []
        for seq in seqs:
            need = fold_memory(seq, span, self.decoder["method"], self.model.beam)
            if self.model.uses_evidence or self.model.network is not None:  # S1 reads the whole L x L image
                need += S1_BYTES_PER_PIXEL * len(seq) ** 2
            needs.append(need)
        threads = max(min(self.threads, len(needs)), 1)
        available = memory.available_memory() if sum(needs) > SMALL_FOLDS else None
        if available is None:
            return threads
        for k, need in enumerate(needs):
            if need > available:
                name = f"sequence {k + 1}" if names is None else f"record {names[k]!r}"
                how = "whole" if span is None else f"with pairs at most {span} apart"
                how += f" with a beam of {self.model.beam}" if self.model.beam else ""
                raise InputError(f"{name} ({len(seqs[k])} nt): folding it {how} needs about {need / 1e9:.1f} GB of "
                                 f"memory, {available / 1e9:.1f} GB available; {self.span_hint}")
        needs.sort()
        while threads > 1 and sum(needs[-threads:]) > available:
            threads -= 1
        return threads


Predictor = Union[GrammarPredictor, "BoxPredictor"]


def predictor_from_checkpoints(s1_path: Path | None | str, s2_path: Path, device: str | None = None,
                               gamma: float | None = None, **kwargs) -> Predictor:
    """The predictor of an S2 checkpoint's kind on ``device`` (default: CUDA when present,
    for the networks, a grammar model's deep S1 too; the grammar folds on the CPU). ``s1_path`` None: no S1, for a
    grammar model that reads none; ``S1_IF_READ``: the shipped S1 when the S2 model reads
    S1, else none (nothing of S1, and no torch, is loaded for a grammar model that gives
    it no weight). ``gamma``: the MEA decoder's, default the checkpoint's."""
    state = read_arrays(s2_path, S2_CHECKPOINT_KINDS)
    reads_s1 = state["kind"] != S2_GRAMMAR_KIND
    if state["kind"] == S2_GRAMMAR_KIND:
        model = GrammarFold.from_state(state)
        if gamma is not None:
            model.decoder["gamma"] = gamma
        reads_s1 = model.uses_evidence
    if s1_path == S1_IF_READ:
        s1_path = SHIPPED_S1 if reads_s1 else None
        if s1_path is not None and not s1_path.is_file():
            raise InputError(f"{s1_path}: the shipped S1, which {s2_path} reads, is missing from this checkout; "
                             "pass --s1_model or restore models/ (git checkout models/)")
    if s1_path is None and reads_s1:
        raise InputError(f"{s2_path}: this S2 model reads S1's output; give it an S1 checkpoint")
    if state["kind"] == S2_GRAMMAR_KIND and s1_path is None and model.network is None:
        return GrammarPredictor(model, **kwargs)
    from stembb.distributed import pick_device
    device = pick_device(device)
    if state["kind"] == S2_GRAMMAR_KIND and s1_path is None:  # its deep S1 runs on the device
        model.network.to(device)
        return GrammarPredictor(model, None, device, **kwargs)
    if state["kind"] == S2_GRAMMAR_KIND:
        from stembb.s1.predict import load_s1_model
        return GrammarPredictor(model, load_s1_model(s1_path, device)[0], device, **kwargs)
    from stembb.s2.predictor import BoxPredictor
    return BoxPredictor.from_checkpoints(s1_path, s2_path, device, gamma, **kwargs)


# The shipped model (models/MODEL_CARD.md): what the end-to-end scripts use without flags.
SHIPPED_S1 = REPO_ROOT / "models" / "stembb_s1.pth"
SHIPPED_S2 = REPO_ROOT / "models" / "stembb_s2.pth"
SHIPPED_TWO_STAGE_S2 = REPO_ROOT / "models" / "stembb_s2_box.pth"  # the S2 of S1 + S2 as a hard filter


S1_IF_READ = "the shipped S1 if read"  # predictor_from_checkpoints: load S1 only for a model that reads it


def add_predictor_args(p: argparse.ArgumentParser) -> None:
    """The flags every end-to-end script shares: checkpoints, decoder, S1's threshold and
    batches, span, device. A flag the chosen model does not read is refused
    (``refuse_unread_flags``), so every default here is None."""
    p.add_argument("--s1_model", type=Path, default=None,
                   help="S1 checkpoint, for an S2 model that reads S1 (default: the shipped models/stembb_s1.pth "
                        "when the S2 model reads S1; the shipped grammar does not)")
    p.add_argument("--s2_model", type=Path, default=SHIPPED_S2,
                   help="S2 checkpoint (default: the shipped models/stembb_s2.pth, see models/MODEL_CARD.md)")
    p.add_argument("--decoder", choices=DECODERS, default=None,
                   help="grammar models: the structure decoder (default: the one chosen on validation, stored in "
                        "the checkpoint; the shipped model's is threshold)")
    p.add_argument("--gamma", type=float, default=None,
                   help="the MEA decoders (grammar --decoder mea, box models): a pair is taken when p > 1/(gamma+1); "
                        "larger favours recall (default: the value calibrated on validation, in the checkpoint)")
    p.add_argument("--cut", type=float, default=None,
                   help="grammar --decoder threshold: pairs of probability above this cut, in (0, 1) (default: the "
                        "value chosen on validation, in the checkpoint)")
    p.add_argument("--threshold_p", "--threshold", dest="threshold_p", type=float, default=None,
                   help="box models: S1's p_on threshold for box proposals, in (0, 1) (default: 0.1)")
    p.add_argument("--batch_size", type=int, default=None,
                   help="sequences per S1 and box S2 forward pass, for models that run S1 (default: 16)")
    p.add_argument("--pseudoknots", action="store_true",
                   help="grammar models: add stems that cross the nested structure, from its pair probabilities "
                        "(dot-bracket shows them as [], {}, <>; the energy is the nested part's)")
    p.add_argument("--pseudoknot_cut", type=float, default=None,
                   help=f"with --pseudoknots: the pair probability a crossing pair must exceed, in (0, 1) (default: "
                        f"{PSEUDOKNOT_CUT}, chosen on PDB TR1)")
    p.add_argument("--max_span", type=int, default=None,
                   help="grammar models: pair only bases at most N apart (like RNAfold's --maxBPspan)")
    p.add_argument("--beam", type=int, default=None,
                   help="grammar models without S1: pair probabilities by beam search, keeping the B best states of "
                        "each kind per base (like LinearPartition's; 100 is the usual setting): time and memory linear "
                        "in length, for whole long RNAs (default: 0, exact)")
    p.add_argument("--device", default=None, help="device of S1 and the box models (default: CUDA when present)")


def make_predictor(args) -> Predictor:
    """A predictor from the flags of ``add_predictor_args``, after checking them."""
    if args.threshold_p is not None:
        check_threshold("--threshold_p", args.threshold_p)
    if args.cut is not None:
        check_threshold("--cut", args.cut)
    if args.pseudoknot_cut is not None:
        check_threshold("--pseudoknot_cut", args.pseudoknot_cut)
    check_positive(args, "gamma")
    if args.batch_size is not None:
        check_at_least_one(args, "batch_size")
    if args.s2_model == SHIPPED_S2 and not SHIPPED_S2.is_file():
        raise InputError(f"{SHIPPED_S2}: the shipped model is missing from this checkout; pass --s2_model "
                         "or restore models/ (git checkout models/)")
    predictor = predictor_from_checkpoints(S1_IF_READ if args.s1_model is None else args.s1_model, args.s2_model,
                                           args.device, gamma=args.gamma)
    refuse_unread_flags(predictor, args)
    if args.threshold_p is not None:
        predictor.threshold = args.threshold_p
    if args.batch_size is not None:
        predictor.batch_size = args.batch_size
    if args.decoder is not None:
        predictor.decoder = predictor.decoder | {"method": args.decoder}
    if args.cut is not None:
        predictor.decoder = predictor.decoder | {"cut": args.cut}
    if args.pseudoknots:
        predictor.decoder = predictor.decoder | {"pseudoknots": True} | (
            {"pseudoknot_cut": args.pseudoknot_cut} if args.pseudoknot_cut is not None else {})
    if args.max_span is not None:
        set_max_span(predictor, args.max_span, "--max_span", args.s2_model)
    if args.beam is not None:
        set_beam(predictor, args.beam, "--beam", args.s2_model)
    return predictor


def refuse_unread_flags(predictor: Predictor, args) -> None:
    """One line for a flag of ``add_predictor_args`` that the chosen model or decoder would
    not read, saying what would read it, rather than a run that silently ignores it."""
    model = args.s2_model
    runs_network = predictor.reads_s1 or (predictor.is_grammar and predictor.model.network is not None)
    if args.device is not None and not runs_network:
        from stembb.distributed import pick_device
        if pick_device(args.device).type != "cpu":  # the value is checked as for any model
            raise InputError(f"--device {args.device}: {model} runs no network, so nothing would move there (the "
                             "grammar folds on the CPU cores); leave --device out")
    if args.s1_model is not None and not predictor.reads_s1:
        raise InputError(f"--s1_model: {model} gives S1 no weight, so no S1 runs; leave --s1_model out, or pass an "
                         "S2 model that reads S1")
    if args.pseudoknot_cut is not None and not args.pseudoknots:
        raise InputError("--pseudoknot_cut is the pseudoknot layer's; add --pseudoknots")
    if not predictor.is_grammar:
        for flag, value in (("--decoder", args.decoder), ("--cut", args.cut),
                            ("--pseudoknots", args.pseudoknots or None)):
            if value is not None:
                raise InputError(f"{flag} is for grammar models (s2_training/train_s2_grammar.py); {model} is a box "
                                 "model, which decodes by MEA (--gamma)")
        return
    if args.threshold_p is not None:
        raise InputError(f"--threshold_p is S1's box-proposal threshold, read by the two-stage box models; {model} "
                         "is a grammar model")
    if args.batch_size is not None and not predictor.reads_s1:
        raise InputError(f"--batch_size sets S1's forward passes; {model} runs no S1 (it folds as many sequences "
                         "at once as the cores and the memory allow)")
    method = args.decoder or predictor.decoder["method"]
    if args.gamma is not None and method != "mea":
        raise InputError(f"--gamma is the MEA decoder's; {model} decodes by {method}: add --decoder mea")
    if args.cut is not None and method != "threshold":
        raise InputError(f"--cut is the threshold decoder's; {model} decodes by {method}: add --decoder threshold")


def set_max_span(predictor: Predictor, span: int, flag: str, s2_path: Path) -> None:
    """Pairs of the predictor's grammar model at most ``span`` bases apart; InputError
    naming ``flag`` for a box model (``s2_path``) or a span no hairpin fits."""
    if not predictor.is_grammar:
        raise InputError(f"{flag} is for grammar models; {s2_path} is not one")
    check_max_span(flag, span)
    predictor.model.max_span = span


def set_beam(predictor: Predictor, beam: int, flag: str, s2_path: Path) -> None:
    """Fold by beam search keeping ``beam`` states of each kind per base (0: exact);
    InputError naming ``flag`` for a negative beam, or a model or decoder the beam
    search cannot serve."""
    if beam < 0:
        raise InputError(f"{flag} must be 0 (exact) or a number of states to keep, got {beam}")
    if not predictor.is_grammar:
        raise InputError(f"{flag} is for grammar models; {s2_path} is not one")
    if beam and (predictor.model.uses_evidence or predictor.model.network is not None):
        raise InputError(f"{flag}: {s2_path} reads S1, whose L x L image a beam would not save; fold it without "
                         f"{flag}, or with a span")
    if beam and predictor.decoder["method"] == "max":
        raise InputError(f"{flag}: the max decoder needs the exact recursions; use --decoder threshold or mea")
    predictor.model.beam = beam


def check_max_span(flag: str, span: int) -> None:
    """InputError naming ``flag`` for a maximum pair span no hairpin fits in."""
    if span <= MIN_LOOP:
        raise InputError(f"{flag} must be above {MIN_LOOP} (a hairpin encloses at least {MIN_LOOP} bases), got {span}")
