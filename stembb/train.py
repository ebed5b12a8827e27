"""The run skeleton both trainers share (S1: s1_training/, S2: s2_training/): resuming a
checkpoint, recording an epoch (metrics.csv + PNG), when to save, and the one checkpoint
dict ``{kind, model, optimizer, scaler, args, config, epoch, history, ...}``."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from stembb.checkpoint import check_resume_args, load_checkpoint
from stembb.errors import InputError
from stembb.io import write_csv
from stembb.plots import plot_history


def load_resume(path: Path, kind: str, args, keys, epochs: int, epochs_flag: str) -> dict:
    """The checkpoint a ``--resume`` continues: of ``kind``, its flags in ``keys`` equal to
    this run's, and fewer than ``epochs`` epochs done (one-line InputError otherwise)."""
    state = load_checkpoint(path, kind)
    check_resume_args(path, state["args"], args, keys)
    if state["epoch"] + 1 >= epochs:
        raise InputError(f"{path}: the run already has {state['epoch'] + 1} epochs ({epochs_flag} {epochs}); "
                         f"raise {epochs_flag} to continue it")
    return state


def refuse_mixed_runs(existing, resume: Path | None, place: Path) -> None:
    """A run writing checkpoints where ``existing`` ones lie must be continuing one of
    them (``resume``, a checkpoint path); otherwise the two runs' epochs would mix (an
    old ``ep_5`` beside a new ``ep_1``, picked by ``--resume`` and by evaluation)."""
    existing = sorted(existing)
    if existing and (resume is None or Path(resume).resolve() not in {p.resolve() for p in existing}):
        raise InputError(f"{place}: already holds another run's checkpoints ({', '.join(p.name for p in existing[:3])}"
                         f"{', ...' if len(existing) > 3 else ''}); continue that run with --resume, or write this one "
                         "elsewhere (or move them aside)")


def record_epoch(history: list[dict], rows: list[dict], panels, csv_path: Path, png_path: Path,
                 ncols: int = 4) -> None:
    """Append an epoch's rows (one per split) to ``history``; rewrite the CSV and the PNG."""
    history.extend(rows)
    write_csv(pd.DataFrame(history), csv_path)
    plot_history(history, panels, png_path, ncols=ncols)


def is_save_epoch(epoch: int, save_every: int, epochs: int) -> bool:
    """Checkpoint every ``save_every`` epochs and after the last one (epochs count from 0)."""
    return (epoch + 1) % save_every == 0 or epoch == epochs - 1


def checkpoint_state(kind: str, model, optimizer, args, config: dict, epoch: int, history: list[dict],
                     scaler=None, **extra) -> dict:
    """The checkpoint dict: weights, optimizer (and AMP scaler) state, the run's flags
    (``resume`` cleared; ``save_checkpoint`` writes paths as text), the network's config,
    epoch and history."""
    return {"kind": kind, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "args": vars(args) | {"resume": None}, "config": config,
            "epoch": epoch, "history": history, **extra}
