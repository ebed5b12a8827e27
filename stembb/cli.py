"""Checks of command-line values shared by the scripts: each failure is one
``InputError`` line naming the flag (or file)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Iterable

from stembb.errors import InputError
from stembb.io import streams


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every script's ``--help``: its docstring as written, and each flag's default where
    the help does not already say it (not for flags off or unset by default)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        shown = " ".join(map(str, action.default)) if isinstance(action.default, (list, tuple)) else action.default
        return f"{text} (default: {shown})"


def check_threshold(flag: str, value: float) -> None:
    """A probability threshold strictly inside (0, 1)."""
    if not 0 < value < 1:
        raise InputError(f"{flag} must be in (0, 1), got {value}")


def check_at_least_one(args, *names: str) -> None:
    """Integer flags (attribute names of ``args``) that must be at least 1."""
    for name in names:
        if getattr(args, name) < 1:
            raise InputError(f"--{name} must be at least 1, got {getattr(args, name)}")


def check_positive(args, *names: str) -> None:
    """Number flags (attribute names of ``args``) that must be above 0 and finite when given."""
    for name in names:
        value = getattr(args, name)
        if value is not None and not 0 < value < float("inf"):
            raise InputError(f"--{name} must be a positive finite number, got {value}")


def seed(text: str) -> int:
    """``--seed``'s type: a whole number from 0 to 2**32 - 1, as numpy and torch take."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 0 <= value < 2 ** 32:
        raise argparse.ArgumentTypeError(f"must be from 0 to 2**32 - 1, got {value}")
    return value


def check_outputs(outputs: Iterable[Path | None], inputs: Iterable[Path | None]) -> None:
    """Refuse, before any work, an output that is an existing folder, the same file as
    one of the inputs (writing it would destroy that input), or a file in a folder this
    user cannot write (it would fail only after the work)."""
    sources = {Path(p).resolve(): Path(p) for p in inputs if p is not None}
    for out in outputs:
        if out is None:
            continue
        out = Path(out)
        if out.is_dir():
            raise InputError(f"{out}: output path is an existing folder; give a file name")
        if out.resolve() in sources:
            raise InputError(f"{out}: output path is also an input ({sources[out.resolve()]}); "
                             "choose another output name")
        if streams(out):  # written into as it is, not created beside it
            continue
        folder = next(p for p in (out.resolve().parent, *out.resolve().parents) if p.exists())
        if not os.access(folder, os.W_OK | os.X_OK):
            raise InputError(f"{out}: cannot write in {folder} (no permission or a read-only file system); "
                             "choose another output path")


def check_num(num: int | None) -> None:
    """``--num`` (first N sequences): absent, or at least 1 (0 or a negative number would
    silently mean 'all' or 'all but the last')."""
    if num is not None and num < 1:
        raise InputError(f"--num must be at least 1, got {num}")
