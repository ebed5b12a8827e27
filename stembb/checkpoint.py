"""Checkpoints: one dict ``{kind, model, optimizer, args, config, epoch, history}``,
written atomically, that carries its own hyperparameters so inference and ``--resume``
need nothing else. Values are plain Python (numbers, strings, lists, dicts) and tensors,
so a plain ``torch.load`` (``weights_only=True``) reads them."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from stembb.errors import InputError
from stembb.io import atomic_path

# every checkpoint names its kind; the S2 kinds are here, not in their modules, so that a
# loader can tell them apart without importing the networks
S1_KIND = "s1_stem_bb"
S2_BOX_KIND = "s2_box2"  # stembb.s2.boxnet, the box transformer
S2_GNN_KIND = "s2_gnn"  # stembb.s2.gnn, the notebook's graph network
_EPOCH = re.compile(r"model_ckpt_ep_(\d+)\.pth$")


def plain(value):
    """``value`` with numpy scalars and arrays turned into Python numbers and lists,
    recursively through dicts, lists and tuples (tensors left as they are)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value


def save_checkpoint(state: dict, path: Path) -> None:
    """Write ``state`` (model/optimizer state dicts kept as tensors, everything else made
    ``plain``) atomically."""
    with atomic_path(path) as tmp:
        torch.save({k: v if k in ("model", "optimizer") else plain(v) for k, v in state.items()}, tmp)


def load_checkpoint(path: Path, kind: str | tuple[str, ...], map_location="cpu") -> dict:
    """Read a checkpoint and check it is of ``kind`` (or one of several); one-line
    InputError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch.load raises many types for a bad file
        raise InputError(f"{path}: not a readable torch checkpoint ({type(exc).__name__})") from None
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    if not isinstance(state, dict) or state.get("kind") not in kinds:
        found = state.get("kind") if isinstance(state, dict) else type(state).__name__
        raise InputError(f"{path}: not an {' or '.join(kinds)} checkpoint (found {found!r})")
    return state


def load_model(path: Path, kind: str, build, device):
    """``(network in eval mode, checkpoint)``: the network ``build(config)`` makes from the
    checkpoint's own hyperparameters, with its weights, on ``device``."""
    state = load_checkpoint(path, kind, map_location=device)
    model = build(state["config"]).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    return model, state


def init_weights(model: torch.nn.Module, path: Path, kind: str | tuple[str, ...], config: dict,
                 ignore: tuple[str, ...] = ("dropout",)) -> dict:
    """``--init``: copy a checkpoint's weights into ``model`` (built from ``config``) and
    return the checkpoint. One-line InputError when the architectures differ (a config
    key outside ``ignore`` disagrees, or the weights do not fit)."""
    state = load_checkpoint(path, kind)
    saved = state.get("config", {})
    diff = [f"{k} {saved.get(k)!r} there vs {config[k]!r} here" for k in config
            if k not in ignore and saved.get(k) != config[k]]
    if diff:
        raise InputError(f"{path}: --init checkpoint has another architecture: {'; '.join(diff)}")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise InputError(f"{path}: --init weights do not fit this network ({str(exc).splitlines()[0]})") from None
    return state


def export_weights(src: Path, dst: Path, kind: str | tuple[str, ...], **extra) -> None:
    """A checkpoint without its optimizer and scaler state (what inference needs, a third
    of the size), with ``extra`` entries (e.g. provenance) added."""
    state = load_checkpoint(src, kind)
    keep = {k: v for k, v in state.items() if k not in ("optimizer", "scaler")}
    save_checkpoint(keep | extra, dst)


def checkpoint_epoch(path: Path) -> int:
    m = _EPOCH.search(Path(path).name)
    return int(m.group(1)) if m else -1


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint of the highest epoch in a run folder, or None."""
    found = [p for p in Path(run_dir).glob("*model_ckpt_ep_*.pth")]
    return max(found, key=checkpoint_epoch) if found else None


def check_resume_args(path: Path, saved: dict, args, keys) -> None:
    """One-line InputError when the flags in ``keys`` differ from the checkpoint's."""
    diff = [f"--{k} {saved.get(k)!r} in the checkpoint vs {getattr(args, k)!r}" for k in keys
            if saved.get(k) != getattr(args, k)]
    if diff:
        raise InputError(f"{path}: --resume checkpoint disagrees with the flags: {'; '.join(diff)}")


def run_ids(checkpoints: list[Path]) -> list[str]:
    """A name per checkpoint's run folder: the folder name, or, when two runs share a
    name, the folder's path relative to the runs' common parent (metrics are never pooled
    across checkpoints)."""
    folders = [c.resolve().parent for c in checkpoints]
    names = [f.name for f in folders]
    if len(set(names)) == len(set(folders)):
        return names
    common = Path(os.path.commonpath(folders))
    return [str(f.relative_to(common)) if f != common else f.name for f in folders]
