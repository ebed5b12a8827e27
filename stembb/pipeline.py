"""Prediction from checkpoints (``Predictor``): a grammar model folds a sequence into
pair probabilities and one structure, reading S1's maps only when its evidence has a
weight (the shipped model's has none); the two-stage box models run S1's proposals, then
S2 over them. Also the checks of sequences and flags the end-to-end scripts share."""
from __future__ import annotations

import argparse
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from stembb.checkpoint import S2_BOX_KIND, S2_GNN_KIND, load_checkpoint
from stembb.cli import check_at_least_one, check_positive, check_threshold
from stembb.distributed import pick_device
from stembb.errors import InputError, UnpairableLetterWarning
from stembb.io import REPO_ROOT, VALID_LETTERS
from stembb.grammar import crf
from stembb.grammar.assemble import MIN_LOOP
from stembb.grammar.partition import Ensemble

if TYPE_CHECKING:
    from stembb.s2.engine import S2Model

# S1 (stembb.s1) and the box models (stembb.s2.engine and its networks) are imported
# only by the predictors that run them: a grammar model that gives S1 no weight (the
# shipped one) folds without loading any network code.
S2_CHECKPOINT_KINDS = (S2_BOX_KIND, S2_GNN_KIND, crf.KIND)


def load_s2_model(path: Path, device: torch.device) -> tuple[torch.nn.Module, S2Model | None, dict]:
    """The model of an S2 checkpoint of any kind, in eval mode; its spec (None for the
    grammar model, ``stembb.grammar.crf``, which runs on the CPU); the checkpoint."""
    state = load_checkpoint(path, S2_CHECKPOINT_KINDS, map_location=device)
    if state["kind"] == crf.KIND:
        model, spec = crf.build_grammar(state["config"]), None
    else:
        from stembb.s2.engine import S2_KINDS, S2_MODELS
        spec = S2_MODELS[S2_KINDS[state["kind"]]]
        model = spec.build(state["config"]).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return model, spec, state


def evidence_maps(s1_model, seqs: Sequence[str], device: torch.device, batch_size: int = 16,
                  show_progress: bool = False) -> list[np.ndarray]:
    """S1's ``p_on`` map (L, L) of each sequence: the grammar model's evidence."""
    from stembb.s1.predict import iter_maps
    out: list = [None] * len(seqs)
    for k, maps in iter_maps(s1_model, seqs, device, batch_size, show_progress):
        out[k] = maps["p_on"]
    return out


PAIRABLE_LETTERS = frozenset("ACGTU")


def letter_problems(seq: str, strict_letters: bool = False) -> tuple[str | None, list[str]]:
    """``(error, unpairable)`` of one sequence: an error for an empty sequence, a
    character that is not a letter (a space or a digit would become a base and shift
    every pair) or, with ``strict_letters``, a letter outside ACGTUN; else None, and the
    letters outside ACGTU (IUPAC codes, modified residues such as P): they fold as bases
    that pair with nothing, as RNAfold folds them."""
    if not seq:
        return "empty sequence", []
    found = sorted(set(seq.upper()) - PAIRABLE_LETTERS)
    odd = [ch for ch in found if not ("A" <= ch <= "Z")]
    if odd:
        shown = ", ".join(repr(ch) + ("" if ch.isprintable() and not ch.isspace() else f" (U+{ord(ch):04X})")
                          for ch in odd)
        return f"characters that are not letters: {shown}", []
    if strict_letters and set(found) - VALID_LETTERS:
        return f"letters outside ACGTUN (--strict_letters): {''.join(sorted(set(found) - VALID_LETTERS))}", []
    return None, found


def unpairable_note(seq: str, letters: list[str]) -> str:
    """What the one-per-record note says of a sequence's letters outside ACGTU."""
    count = sum(ch.upper() in letters for ch in seq)
    return f"{count} base{'s' if count > 1 else ''} outside ACGTU ({''.join(letters)}) fold{'' if count > 1 else 's'} " \
           "unpaired"


def check_sequence_list(seqs, where: str) -> None:
    """A list of sequences, as the API takes them: a TypeError for one string (it would
    fold each letter) or items that are not strings; a one-line InputError for an empty
    sequence or a character that is not a letter (``letter_problems``). Letters outside
    ACGTU fold unpaired, with an ``UnpairableLetterWarning`` naming the sequence."""
    if isinstance(seqs, (str, bytes)):
        raise TypeError(f"{where}: takes a list of sequences, got one {type(seqs).__name__} (wrap it: [seq])")
    for k, seq in enumerate(seqs):
        if not isinstance(seq, str):
            raise TypeError(f"{where}: sequence {k + 1} is a {type(seq).__name__}, not a str")
        error, letters = letter_problems(seq)
        if error:
            raise InputError(f"{where}: sequence {k + 1}: {error}")
        if letters:
            warnings.warn(f"{where}: sequence {k + 1}: {unpairable_note(seq, letters)}", UnpairableLetterWarning,
                          stacklevel=3)


@dataclass
class Predictor:
    """Both stages loaded from their checkpoints; ``timings`` accumulate seconds per step.

    ``gamma`` defaults to the value calibrated at the end of S2 training (stored in the
    S2 checkpoint as ``decode_gamma``, or in its ``decode`` settings for the grammar
    model, with the decoding method and cut)."""

    s1_model: torch.nn.Module | None
    s2_model: torch.nn.Module
    s2_spec: S2Model | None
    s2_config: dict
    device: torch.device
    threshold: float = 0.1
    gamma: float = 1.0
    batch_size: int = 16
    decoder: dict = field(default_factory=lambda: {"method": "mea", "cut": 0.5})
    threads: int = field(default_factory=torch.get_num_threads)  # grammar partition functions at once
    span_hint: str = "pass a smaller --max_span (RNAfold's --maxBPspan; e.g. 300)"  # how the caller limits spans
    timings: dict = field(default_factory=lambda: {"s1_forward": 0.0, "s1_decode": 0.0, "s2": 0.0, "structure": 0.0})

    @classmethod
    def from_checkpoints(cls, s1_path: Path | None | str, s2_path: Path, device: torch.device,
                         gamma: float | None = None, **kwargs) -> "Predictor":
        """Both models. ``s1_path`` None: no S1, for a grammar S2 model that reads none;
        ``S1_IF_READ``: the shipped S1 when the S2 model reads S1, else none (nothing of
        S1 is loaded for a model that gives it no weight)."""
        s2, spec, state = load_s2_model(s2_path, device)
        if s1_path == S1_IF_READ:
            s1_path = SHIPPED_S1 if spec is not None or s2.uses_evidence else None
            if s1_path is not None and not s1_path.is_file():
                raise InputError(f"{s1_path}: the shipped S1, which {s2_path} reads, is missing from this checkout; "
                                 "pass --s1_model or restore models/ (git checkout models/)")
        s1 = None
        if s1_path is not None:
            from stembb.s1.predict import load_s1_model
            s1 = load_s1_model(s1_path, device)[0]
        decoder = state.get("decode", {"method": "mea", "gamma": state.get("decode_gamma", 1.0), "cut": 0.5})
        gamma = decoder["gamma"] if gamma is None else gamma
        return cls(s1, s2, spec, state["config"], device, gamma=gamma, decoder=decoder, **kwargs)

    @property
    def is_grammar(self) -> bool:
        return isinstance(self.s2_model, crf.GrammarFold)

    @property
    def reads_s1(self) -> bool:
        """Whether S1 runs: for the box models always, for a grammar model when its
        evidence has a weight."""
        return not self.is_grammar or self.s2_model.uses_evidence

    def predict(self, seqs: Sequence[str]) -> list[list[tuple[int, int]]]:
        """One structure (sorted 0-based pairs) per sequence (``check_sequence_list``)."""
        check_sequence_list(seqs, "Predictor.predict")
        return self.predict_checked(seqs)

    def predict_checked(self, seqs: Sequence[str]) -> list[list[tuple[int, int]]]:
        """``predict`` of sequences its caller has already checked."""
        if self.is_grammar:
            return self.fold_checked(seqs)[0]
        return self.structures(seqs, self.proposals(seqs))

    def fold(self, seqs: Sequence[str], names: Sequence[str] | None = None
             ) -> tuple[list[list[tuple[int, int]]], list[Ensemble], list[float]]:
        """Grammar model: one structure per sequence, its pair probabilities, and the
        structure's score as a pseudo free energy (``-KT * S``, kcal/mol when the loop
        terms are ViennaRNA's energies, as they start). S1 runs only when its evidence
        has a weight other than 0. The sequences are checked (``check_sequence_list``),
        and a sequence whose folding would not fit in the memory available is a one-line
        InputError naming it (``names``, default "sequence k"), before any work."""
        check_sequence_list(seqs, "Predictor.fold")
        return self.fold_checked(seqs, names)

    @torch.no_grad()
    def fold_checked(self, seqs: Sequence[str], names: Sequence[str] | None = None
                     ) -> tuple[list[list[tuple[int, int]]], list[Ensemble], list[float]]:
        """``fold`` of sequences its caller has already checked."""
        threads = self.folds_at_once(seqs, names)
        t = time.perf_counter()
        maps = (evidence_maps(self.s1_model, seqs, self.device, self.batch_size) if self.s2_model.uses_evidence
                else [None] * len(seqs))
        self.timings["s1_forward"] += time.perf_counter() - t
        t = time.perf_counter()
        examples = [self.s2_model.example(seq, p_on) for seq, p_on in zip(seqs, maps)]
        ensembles = crf.ensembles(self.s2_model, examples, threads)
        self.timings["s2"] += time.perf_counter() - t
        t = time.perf_counter()
        out = [crf.decode(self.s2_model, e, self.decoder["method"], self.gamma, self.decoder["cut"], ens)
               for e, ens in zip(examples, ensembles)]
        energies = [-crf.KT * self.s2_model.score(e, y) for e, y in zip(examples, out)]
        self.timings["structure"] += time.perf_counter() - t
        return out, ensembles, energies

    def warm_up(self) -> None:
        """Fold one short sequence, so that the one-off cost of loading the compiled
        passes is not counted in the first record's time."""
        self.predict(["GGGGAAACCCC"])

    def folds_at_once(self, seqs: Sequence[str], names: Sequence[str] | None = None) -> int:
        """How many partition functions may run at once (at most ``threads``): as many
        as the largest folds fit in the memory available together (``crf.fold_memory``;
        not checked where the system does not say). InputError for the first sequence
        whose fold alone needs more."""
        available = available_memory()
        if available is None:
            return self.threads
        span = self.s2_model.max_span
        needs = []
        for k, seq in enumerate(seqs):
            need = crf.fold_memory(seq, span, self.decoder["method"])
            if self.s2_model.uses_evidence:  # S1 reads the whole L x L image, span or not
                need += S1_BYTES_PER_PIXEL * len(seq) ** 2
            if need > available:
                name = f"sequence {k + 1}" if names is None else f"record {names[k]!r}"
                how = "whole" if span is None else f"with pairs at most {span} apart"
                raise InputError(f"{name} ({len(seq)} nt): folding it {how} needs about {need / 1e9:.1f} GB of "
                                 f"memory, {available / 1e9:.1f} GB available; {self.span_hint}")
            needs.append(need)
        needs.sort()
        threads = max(min(self.threads, len(needs)), 1)
        while threads > 1 and sum(needs[-threads:]) > available:
            threads -= 1
        return threads

    @torch.no_grad()
    def proposals(self, seqs: Sequence[str]) -> list:
        """S1: the decoded box proposals of each sequence (``stembb.s1.predict.decode_proposals``)."""
        from stembb.s1.predict import decode_proposals, predict_maps
        t = time.perf_counter()
        maps = predict_maps(self.s1_model, seqs, self.device, self.batch_size)
        self.timings["s1_forward"] += time.perf_counter() - t
        t = time.perf_counter()
        out = [decode_proposals(m, seq, self.threshold) for seq, m in zip(seqs, maps)]
        self.timings["s1_decode"] += time.perf_counter() - t
        return out

    @torch.no_grad()
    def structures(self, seqs: Sequence[str], proposals: Sequence) -> list[list[tuple[int, int]]]:
        """S2 over batches of sequences, then one valid structure per sequence. The network
        runs only when its logits count (a box model whose calibrated logit weight is 0
        decodes from its loop terms alone)."""
        from stembb.s2.engine import item_slices
        t = time.perf_counter()
        examples = [self.s2_spec.from_proposals(seq, props, self.s2_config) for seq, props in zip(seqs, proposals)]
        logits: list = [None if e is None else np.zeros(self.s2_spec.n_items(e)) for e in examples]
        scored = [k for k, e in enumerate(examples) if e is not None] if self.s2_spec.uses_logits(self.s2_model) else []
        for start in range(0, len(scored), self.batch_size):
            idx = scored[start:start + self.batch_size]
            batch = self.s2_spec.collate([examples[k] for k in idx])
            flat = self.s2_model({k: v.to(self.device) for k, v in batch.items()}).double().cpu().numpy()
            for k, items in item_slices(self.s2_spec, examples, idx):
                logits[k] = flat[items]
        self.timings["s2"] += time.perf_counter() - t
        t = time.perf_counter()
        out = [self.s2_spec.decode(self.s2_model, ex, x, self.gamma) if ex is not None else []
               for ex, x in zip(examples, logits)]
        self.timings["structure"] += time.perf_counter() - t
        return out


# S1's forward pass on one sequence, per pixel of its L x L image (the small network of
# models/stembb_s1.pth, VmHWM at 400 and 800 nt: 820 and 460 bytes)
S1_BYTES_PER_PIXEL = 500


def available_memory() -> int | None:
    """Bytes of memory a new allocation can take: Linux's ``MemAvailable``, or less where
    this process's cgroup (a SLURM job, a container) has a lower limit; None where the
    system says neither."""
    found = cgroup_headroom()
    try:
        with open("/proc/meminfo") as f:
            found += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
    except OSError:
        pass
    return min(found) if found else None


def cgroup_headroom(proc_cgroup: Path = Path("/proc/self/cgroup"), mount: Path = Path("/sys/fs/cgroup")) -> list[int]:
    """Bytes left under each memory limit of this process's cgroup and of its ancestors
    (cgroup v2's ``memory.max``, or v1's memory controller), as ``proc_cgroup`` names it
    under ``mount``; a scheduler may set the limit on a parent of the process's own."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            root, limit_file, usage_file = mount, "memory.max", "memory.current"
        elif "memory" in controllers.split(","):
            root, limit_file, usage_file = mount / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes"
        else:
            continue
        folder = root / path.strip("/")
        for level in [folder, *folder.parents]:
            try:
                limit = (level / limit_file).read_text().strip()
                if limit != "max":
                    out.append(int(limit) - int((level / usage_file).read_text()))
            except (OSError, ValueError):
                pass
            if level == root:
                break
    return out


# The shipped model (models/MODEL_CARD.md): what the end-to-end scripts use without flags.
SHIPPED_S1 = REPO_ROOT / "models" / "stembb_s1.pth"
SHIPPED_S2 = REPO_ROOT / "models" / "stembb_s2.pth"
SHIPPED_TWO_STAGE_S2 = REPO_ROOT / "models" / "stembb_s2_box.pth"  # the S2 of S1 + S2 as a hard filter


S1_IF_READ = "the shipped S1 if read"  # Predictor.from_checkpoints: load S1 only for a model that reads it


def add_predictor_args(p: argparse.ArgumentParser) -> None:
    """The flags every end-to-end script shares: checkpoints, decoder, S1's threshold and
    batches, span, device. A flag the chosen model does not read is refused
    (``refuse_unread_flags``), so every default here is None."""
    p.add_argument("--s1_model", type=Path, default=None,
                   help="S1 checkpoint, for an S2 model that reads S1 (default: the shipped models/stembb_s1.pth "
                        "when the S2 model reads S1; the shipped grammar does not)")
    p.add_argument("--s2_model", type=Path, default=SHIPPED_S2,
                   help="S2 checkpoint (default: the shipped models/stembb_s2.pth, see models/MODEL_CARD.md)")
    p.add_argument("--decoder", choices=crf.DECODERS, default=None,
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
    p.add_argument("--max_span", type=int, default=None,
                   help="grammar S2 models: pair only bases at most N apart (like RNAfold's --maxBPspan)")
    p.add_argument("--device", default=None, help="device of S1 and the box models (default: CUDA when present)")


def add_letters_arg(p: argparse.ArgumentParser) -> None:
    """``--strict_letters``, for every script that reads sequences to fold."""
    p.add_argument("--strict_letters", action="store_true",
                   help="a letter outside ACGTUN is an error (default: it folds as a base that pairs with nothing, "
                        "noted once per record)")


def make_predictor(args) -> "Predictor":
    """A Predictor from the flags of ``add_predictor_args``, after checking them."""
    if args.threshold_p is not None:
        check_threshold("--threshold_p", args.threshold_p)
    if args.cut is not None:
        check_threshold("--cut", args.cut)
    check_positive(args, "gamma")
    if args.batch_size is not None:
        check_at_least_one(args, "batch_size")
    if args.s2_model == SHIPPED_S2 and not SHIPPED_S2.is_file():
        raise InputError(f"{SHIPPED_S2}: the shipped model is missing from this checkout; pass --s2_model "
                         "or restore models/ (git checkout models/)")
    device = pick_device(args.device)
    given = {k: v for k, v in (("threshold", args.threshold_p), ("batch_size", args.batch_size)) if v is not None}
    predictor = Predictor.from_checkpoints(S1_IF_READ if args.s1_model is None else args.s1_model, args.s2_model,
                                           device, gamma=args.gamma, **given)
    refuse_unread_flags(predictor, args)
    if args.decoder is not None:
        predictor.decoder = predictor.decoder | {"method": args.decoder}
    if args.cut is not None:
        predictor.decoder = predictor.decoder | {"cut": args.cut}
    if args.max_span is not None:
        set_max_span(predictor, args.max_span, "--max_span", args.s2_model)
    return predictor


def refuse_unread_flags(predictor: Predictor, args) -> None:
    """One line for a flag of ``add_predictor_args`` that the chosen model or decoder would
    not read, saying what would read it, rather than a run that silently ignores it."""
    model = args.s2_model
    if args.s1_model is not None and not predictor.reads_s1:
        raise InputError(f"--s1_model: {model} gives S1 no weight, so no S1 runs; leave --s1_model out, or pass an "
                         "S2 model that reads S1")
    if not predictor.is_grammar:
        for flag, value in (("--decoder", args.decoder), ("--cut", args.cut)):
            if value is not None:
                raise InputError(f"{flag} is for grammar S2 models (s2_training/train_s2_crf.py); {model} is a box "
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
        raise InputError(f"{flag} is for grammar S2 models; {s2_path} is not one")
    check_max_span(flag, span)
    predictor.s2_model.max_span = span


def check_max_span(flag: str, span: int) -> None:
    """InputError naming ``flag`` for a maximum pair span no hairpin fits in."""
    if span <= MIN_LOOP:
        raise InputError(f"{flag} must be above {MIN_LOOP} (a hairpin encloses at least {MIN_LOOP} bases), got {span}")


def check_sequences(path: Path, records, max_length: int, skip_long: bool = False, strict_letters: bool = False,
                    log=None) -> list:
    """The records to predict: one-line InputError naming the first record that is empty,
    holds a character that is not a letter, or (``strict_letters``) a letter outside
    ACGTUN (``letter_problems``); letters outside ACGTU fold unpaired, with a note per
    record on ``log``. Records longer than ``max_length`` are an error too, or, with
    ``skip_long``, left out (the caller reports how many)."""
    for rec in records:
        error, letters = letter_problems(rec.seq, strict_letters)
        if error:
            raise InputError(f"{path}: record {rec.name!r}: {error}")
        if letters and log is not None:
            log.info("note: record %r: %s", rec.name, unpairable_note(rec.seq, letters))
        if len(rec.seq) > max_length and not skip_long:
            raise InputError(f"{path}: record {rec.name!r} is {len(rec.seq)} nt, longer than --max_length {max_length}")
    kept = [rec for rec in records if len(rec.seq) <= max_length]
    if not kept:
        raise InputError(f"{path}: no record of at most --max_length {max_length} nt")
    return kept
