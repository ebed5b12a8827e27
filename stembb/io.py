"""Atomic writes and the one reader of the project's gzipped pandas pickles.

Data schema (one row per example; written by the generators in s1_data_gen/ and
s2_data_gen/, read by every later stage):

==================  ========================================================================
column              meaning
==================  ========================================================================
seq                 str, DNA/RNA letters ACGTUN (upper case), the transcribed strand 5'->3'
one_idx             ``([i...], [j...])`` 0-based pairs i < j. Merged multi-struct rows hold
                    the MFE structure here (their target is ``bounding_boxes``)
bounding_boxes      list of ``((x0, y0), (wx, wy), kind)``; kind in stem, hairpin_loop,
                    bulge, internal_loop, pseudo_knot (legacy ``pesudo_knot`` is read too)
chrom, strand       provenance: contig and gene strand
start, end          1-based inclusive genomic coordinates of the segment
gene_id             the annotation's gene_id
segment_index       the segment's place in the seeded segment stream (orders merged shards)
fe, mfe_freq,       (MFE rows) free energy (kcal/mol), ensemble frequency of the MFE
ens_div             structure, ensemble diversity
sample_id           (multi-struct rows) index of the sample within its segment
stem_box_count      (merged rows) per stem box, in order, how many samples contained it
n_samples,          (merged rows) unique samples merged, and stem boxes dropped because
n_conflicts         they claimed pixels of a box seen in more samples
family, clan,       (real structures, s1_data_gen/make_structure_dataset.py) Rfam accession
family_name         or folder, clan ('' if none), family name
family_size         (real structures) the family's number of sequences in the inputs
source, name        the input file and the record's name
pseudoknotted       (real structures) whether the structure has crossing pairs
split               train / val / test, by clan or family; trainers never use test rows
==================  ========================================================================

S2 feature pickles (``s2_data_gen/s1_pred_stem_processing.py``) add ``stem_bb_bps``,
``target_bps`` and ``stem_bb_bps_features``; see stembb.s2.candidates.

A pickle can run any code while it is read. ``read_pickle`` therefore unpickles with an
allowlist (``SAFE_GLOBALS``): the pandas, numpy and builtin types a DataFrame of this
schema is made of, and ``stembb.structure.Box``; anything else is refused with one line
naming it, before it is called.
"""
from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import os
import pickle
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from stembb.errors import WRITE_ERRNOS, InputError, RunFailed
from stembb.structure import StructureError, normalize_box, pairs_from_one_idx

if TYPE_CHECKING:
    import pandas as pd

REPO_ROOT = Path(__file__).resolve().parent.parent
_UMASK = os.umask(0)
os.umask(_UMASK)
VALID_LETTERS = frozenset("ACGTUN")
STRUCTURE_COLUMNS = ("seq", "one_idx", "bounding_boxes")


def streams(path: Path) -> bool:
    """Whether writing ``path`` streams instead of renaming a finished file onto it: ``-``
    (standard output) or something that exists and is not a regular file (a FIFO, a
    device such as /dev/null), which a rename would replace."""
    path = Path(path)
    return str(path) == "-" or (path.exists() and not path.is_file())


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary path; on success its content becomes ``path``.

    For a regular file (or a new one) the temporary file sits beside it and is renamed
    onto it, so a crash, Ctrl-C or SIGTERM (``stembb.errors.run_main``) leaves ``path``
    as it was (absent or the previous complete file); through a symbolic link it is the
    link's target that is replaced, the link stays. ``-``, FIFOs and devices
    (``streams``) get the finished content written into them, nothing on failure. The
    file gets the usual permissions (umask). A write refused for room or a read-only
    mount (``WRITE_ERRNOS``) is a one-line ``RunFailed`` naming ``path``.
    """
    path = Path(path)
    try:
        with _atomic_path(path) as tmp:
            yield tmp
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        raise RunFailed(f"{path}: could not be written ({exc.strerror}); what was there before is kept") from None


@contextlib.contextmanager
def _atomic_path(path: Path):
    if streams(path):
        fd, tmp = tempfile.mkstemp(prefix="stembb.", suffix=".tmp")
        os.close(fd)
        try:
            yield Path(tmp)
            with open(tmp, "rb") as src:
                if str(path) == "-":
                    shutil.copyfileobj(src, sys.stdout.buffer)
                    sys.stdout.buffer.flush()
                else:
                    with open(path, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return
    if path.is_symlink():
        path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are shared like any file
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_pickle(df: pd.DataFrame, path: Path) -> None:
    """Write a DataFrame as a gzipped pickle, atomically. Compression level 1: files
    about 15% larger than gzip's default 9, written about 20 times faster (S2 candidate
    pickles spent more time compressing than computing)."""
    with atomic_path(path) as tmp:
        df.to_pickle(tmp, compression={"method": "gzip", "compresslevel": 1})


def write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def _check_row(path: Path, idx, row, columns: Iterable[str], check_letters: bool) -> None:
    seq = row["seq"]
    if not isinstance(seq, str) or not seq:
        raise InputError(f"{path}: row {idx}: column 'seq' is not a non-empty string")
    bad = set(seq.upper()) - VALID_LETTERS
    if bad and check_letters:
        raise InputError(f"{path}: row {idx}: column 'seq' has letters outside ACGTUN: {''.join(sorted(bad))}")
    if "one_idx" in columns:
        try:
            pairs = pairs_from_one_idx(row["one_idx"])
        except (TypeError, ValueError) as exc:
            raise InputError(f"{path}: row {idx}: column 'one_idx' is malformed ({exc})") from None
        if any(i >= j or i < 0 or j >= len(seq) for i, j in pairs):
            raise InputError(f"{path}: row {idx}: column 'one_idx' has a pair with i >= j or out of range")


# (module, names) a DataFrame of the schema above may name, after pandas' renames of old
# locations; functions here only rebuild arrays, blocks and indexes
SAFE_GLOBALS = {
    "builtins": {"slice", "set", "frozenset", "complex", "bytearray", "range", "object"},
    "copyreg": {"_reconstructor"},
    "collections": {"OrderedDict"},
    "_codecs": {"encode"},
    "numpy": {"ndarray", "dtype"},
    "numpy._core.multiarray": {"_reconstruct", "scalar"},
    "numpy.core.multiarray": {"_reconstruct", "scalar"},
    "numpy._core.numeric": {"_frombuffer"},
    "numpy.core.numeric": {"_frombuffer"},
    "pandas": {"DataFrame", "Series", "Index", "RangeIndex", "StringDtype"},
    "pandas.core.frame": {"DataFrame"},
    "pandas.core.series": {"Series"},
    "pandas.core.indexes.base": {"_new_Index", "Index"},
    "pandas.core.indexes.range": {"RangeIndex"},
    "pandas.core.internals.managers": {"BlockManager", "SingleBlockManager"},
    "pandas.core.internals.blocks": {"new_block", "Block", "NumpyBlock", "ObjectBlock"},
    "pandas._libs.internals": {"_unpickle_block"},
    "pandas._libs.arrays": {"__pyx_unpickle_NDArrayBacked"},
    "pandas.arrays": {"StringArray"},
    "pandas.core.arrays.string_": {"StringArray", "StringDtype"},
    "stembb.structure": {"Box"},
}


class _SafeUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str):
        from pandas.compat.pickle_compat import _class_locations_map
        mapped = _class_locations_map.get((module, name), (module, name))
        if mapped[1] not in SAFE_GLOBALS.get(mapped[0], ()) and not (
                mapped[0] == "numpy.dtypes" and name.endswith("DType")):
            raise InputError(f"{self.path}: refused to unpickle {module}.{name}: data pickles are read with an "
                             "allowlist of pandas, numpy and builtin types, since a pickle can run code")
        return super().find_class(*mapped)


def _open_compressed(path: Path):
    """``path`` opened for reading, gzip, bz2 or xz by its first bytes, else as it is."""
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")
    if magic[:3] == b"BZh":
        return bz2.open(path, "rb")
    if magic == b"\xfd7zXZ\x00":
        return lzma.open(path, "rb")
    return open(path, "rb")


def read_pickle(path: Path, required: Iterable[str] = STRUCTURE_COLUMNS, check_letters: bool = True,
                first: int | None = None) -> pd.DataFrame:
    """Read a gzipped DataFrame pickle and validate the ``required`` columns.

    ``check_letters`` False lets sequences with letters outside ACGTUN through, for
    callers that drop and count them. ``first``: keep only the first N rows.

    ``bounding_boxes`` are normalised to ``Box`` tuples (legacy kind spellings mapped).
    Raises InputError naming the file, and the row and column when one is malformed.
    """
    import pandas as pd  # here, not above: the fold path reads no pickle and starts faster without pandas
    path = Path(path)
    required = tuple(required)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    try:
        with _open_compressed(path) as f:
            df = _SafeUnpickler(f, path).load()
    except InputError:
        raise
    except Exception as exc:  # pickle/gzip raise many types for a bad file
        raise InputError(f"{path}: not a readable pandas pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(df, pd.DataFrame):
        raise InputError(f"{path}: holds a {type(df).__name__}, not a pandas DataFrame")
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
    if df.empty:
        raise InputError(f"{path}: has no rows")
    df = df.iloc[:first].reset_index(drop=True) if first else df.reset_index(drop=True)
    if "seq" in required:
        for idx, row in zip(df.index, df.to_dict("records")):
            _check_row(path, idx, row, required, check_letters)
    if "bounding_boxes" in df.columns:
        normalized = []
        lengths = df["seq"].str.len() if "seq" in df.columns else None
        for idx, boxes in zip(df.index, df["bounding_boxes"]):
            try:
                normalized.append([normalize_box(b) for b in boxes])
            except (StructureError, TypeError, ValueError) as exc:
                raise InputError(f"{path}: row {idx}: column 'bounding_boxes' is malformed ({exc})") from None
            outside = [b for b in normalized[-1] if lengths is not None and (
                min(b.corner) < 0 or b.corner[0] + b.size[0] > lengths[idx] or b.corner[1] + b.size[1] > lengths[idx])]
            if outside:
                raise InputError(f"{path}: row {idx}: bounding box {tuple(outside[0])} lies outside its "
                                 f"{lengths[idx]}-nt sequence")
        df["bounding_boxes"] = normalized
    return df
