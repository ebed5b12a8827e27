"""Checks of the sequences to fold, shared by the API and every script that folds: a
character that is not a letter is refused (it would become a base and shift every
pair), a letter outside ACGTU folds as a base that pairs with nothing, as RNAfold folds
it, with one note per record (``--strict_letters`` refuses it instead)."""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from stembb.errors import InputError, UnpairableLetterWarning
from stembb.io import VALID_LETTERS


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


def check_record(path: Path, rec, max_length: float, strict_letters: bool = False, log=None) -> bool:
    """Whether ``rec`` is at most ``max_length`` long, after a one-line InputError for an
    empty sequence, a character that is not a letter, or (``strict_letters``) a letter
    outside ACGTUN (``letter_problems``); letters outside ACGTU fold unpaired, with a
    note on ``log``."""
    error, letters = letter_problems(rec.seq, strict_letters)
    if error:
        raise InputError(f"{path}: record {rec.name!r}: {error}")
    if letters and log is not None:
        log.info("note: record %r: %s", rec.name, unpairable_note(rec.seq, letters))
    return len(rec.seq) <= max_length


def check_sequences(path: Path, records, max_length: float, skip_long: bool = False, strict_letters: bool = False,
                    log=None) -> list:
    """The records to predict, each checked by ``check_record``. Records longer than
    ``max_length`` are an error too, or, with ``skip_long``, left out (the caller
    reports how many)."""
    kept = []
    for rec in records:
        if check_record(path, rec, max_length, strict_letters, log):
            kept.append(rec)
        elif not skip_long:
            raise InputError(f"{path}: record {rec.name!r} is {len(rec.seq)} nt, longer than --max_length {max_length}")
    if not kept:
        raise InputError(f"{path}: no record of at most --max_length {max_length} nt")
    return kept


def add_letters_arg(p: argparse.ArgumentParser) -> None:
    """``--strict_letters``, for every script that reads sequences to fold."""
    p.add_argument("--strict_letters", action="store_true",
                   help="a letter outside ACGTUN is an error (default: it folds as a base that pairs with nothing, "
                        "noted once per record)")
