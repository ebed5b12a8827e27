"""Checkpoints: one dict ``{kind, model, optimizer, args, config, epoch, history}``,
written atomically, that carries its own hyperparameters so inference and ``--resume``
need nothing else. Values are plain Python (numbers, strings, lists, dicts) and tensors,
so a plain ``torch.load`` (``weights_only=True``) reads them, and so does
``read_arrays`` without torch: the grammar model folds with numpy alone, and importing
torch would take longer than folding a short sequence."""
from __future__ import annotations

import os
import pickle
import re
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stembb.errors import InputError
from stembb.io import atomic_path

if TYPE_CHECKING:
    import torch

# every checkpoint names its kind; the S2 kinds are here, not in their modules, so that a
# loader can tell them apart without importing the networks
S1_KIND = "s1_stem_bb"
S2_BOX_KIND = "s2_box2"  # stembb.s2.boxnet, the box transformer
S2_GNN_KIND = "s2_gnn"  # stembb.s2.gnn, the notebook's graph network
S2_GRAMMAR_KIND = "s2_grammar"  # stembb.grammar.model, the grammar model (trained by stembb.grammar.crf)
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
    import torch
    with atomic_path(path) as tmp:
        torch.save({k: v if k in ("model", "optimizer") else plain(v) for k, v in state.items()}, tmp)


def load_checkpoint(path: Path, kind: str | tuple[str, ...], map_location="cpu") -> dict:
    """Read a checkpoint and check it is of ``kind`` (or one of several); one-line
    InputError otherwise."""
    import torch
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch.load raises many types for a bad file
        raise InputError(f"{path}: not a readable torch checkpoint ({type(exc).__name__})") from None
    return _check_kind(path, state, kind)


def _check_kind(path: Path, state, kind: str | tuple[str, ...]) -> dict:
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    if not isinstance(state, dict) or state.get("kind") not in kinds:
        found = state.get("kind") if isinstance(state, dict) else type(state).__name__
        raise InputError(f"{path}: not an {' or '.join(kinds)} checkpoint (found {found!r})")
    return state


# torch's storage classes, by the name a checkpoint's pickle gives them, as numpy types
_STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                   "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
                   "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}


class _ArrayUnpickler(pickle.Unpickler):
    """Reads the ``data.pkl`` of a checkpoint written by ``torch.save`` (a zip of one
    pickle and one raw file per storage), building numpy arrays where torch would build
    tensors. Like ``torch.load(weights_only=True)`` it refuses every other class, so it
    runs no code a file names; a checkpoint with anything else falls back to torch."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str, data: bytes):
        import io
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_array
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return lambda data, requires_grad, hooks: data
        raise pickle.UnpicklingError(f"{module}.{name}")

    def persistent_load(self, pid):
        tag, dtype, key, _location, numel = pid
        if tag != "storage":
            raise pickle.UnpicklingError(f"persistent id {tag!r}")
        raw = self.archive.read(f"{self.prefix}data/{key}")
        return np.frombuffer(raw, dtype=dtype, count=numel)


def _rebuild_array(storage: np.ndarray, offset: int, size, stride, requires_grad=False, hooks=None, metadata=None):
    flat = storage[offset:]
    view = np.lib.stride_tricks.as_strided(flat, shape=tuple(size), strides=[s * flat.itemsize for s in stride])
    return view.copy()


def read_arrays(path: Path, kind: str | tuple[str, ...]) -> dict:
    """A checkpoint as ``load_checkpoint`` reads it, with numpy arrays for tensors and
    without importing torch (falling back to torch for a file of another layout)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pkl = next(n for n in names if n.endswith("/data.pkl"))
            prefix = pkl[:-len("data.pkl")]
            order = archive.read(prefix + "byteorder").strip() if prefix + "byteorder" in names else b"little"
            if order.decode() != sys.byteorder:
                raise pickle.UnpicklingError(f"{order.decode()}-endian storages")
            state = _ArrayUnpickler(archive, prefix, archive.read(pkl)).load()
    except (zipfile.BadZipFile, StopIteration, KeyError, pickle.UnpicklingError, ValueError, TypeError, EOFError):
        state = _tensors_as_arrays(load_checkpoint(path, kind))
    return _check_kind(path, state, kind)


def _tensors_as_arrays(value):
    if isinstance(value, dict):
        return type(value)((k, _tensors_as_arrays(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_tensors_as_arrays(v) for v in value)
    return value.detach().cpu().numpy() if hasattr(value, "detach") else value


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
