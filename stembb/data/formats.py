"""Standard structure files: BPSEQ, CT, FASTA and dot-bracket FASTA (RNAfold style).

Indices in files are 1-based; in memory pairs are 0-based ``(i, j)``, i < j.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

from stembb.errors import InputError
from stembb.structure import StructureError, db_from_pairs, pairs_from_db, validate_pairs

STRUCTURE_SUFFIXES = {".bpseq": "bpseq", ".ct": "ct"}


@dataclass
class Record:
    """One sequence with an optional reference structure; ``family`` is the subfolder."""

    name: str
    seq: str
    pairs: list | None = None
    family: str = ""


def read_text(path: Path) -> str:
    """A text file's contents, gzip-compressed or not, a UTF-8 byte-order mark dropped;
    one-line InputError when it is not UTF-8 text."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise InputError(f"{path}: damaged gzip file ({exc})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})") from None


def _pairs_from_partners(path: Path, partners: list[int]) -> list[tuple[int, int]]:
    pairs = set()
    for i, j in enumerate(partners, 1):
        if j == 0:
            continue
        if j > len(partners) or partners[j - 1] != i:
            raise InputError(f"{path}: base {i} pairs with {j}, which does not pair back")
        pairs.add((min(i, j) - 1, max(i, j) - 1))
    return sorted(pairs)


def read_bpseq(path: Path) -> Record:
    """BPSEQ: lines ``index base partner`` (partner 0 = unpaired); other lines are skipped."""
    seq, partners = [], []
    for lineno, line in enumerate(read_text(path).splitlines(), 1):
        cols = line.split()
        if len(cols) != 3 or not cols[0].isdigit():
            continue
        if int(cols[0]) != len(seq) + 1 or not cols[2].lstrip("-").isdigit():
            raise InputError(f"{path}:{lineno}: expected 'index base partner' with index {len(seq) + 1}")
        seq.append(cols[1])
        partners.append(int(cols[2]))
    if not seq:
        raise InputError(f"{path}: no BPSEQ lines")
    return Record(Path(path).stem, "".join(seq).upper(), _pairs_from_partners(path, partners))


def read_ct(path: Path) -> Record:
    """CT: a header ``N title`` then N lines ``index base prev next partner index``."""
    lines = [line for line in read_text(path).splitlines() if line.strip()]
    try:
        n = int(lines[0].split()[0])
        rows = [line.split() for line in lines[1:n + 1]]
        seq = "".join(r[1] for r in rows).upper()
        partners = [int(r[4]) for r in rows]
    except (IndexError, ValueError):
        raise InputError(f"{path}: not a CT file (header 'N title' then N rows of 6 columns)") from None
    if len(rows) != n:
        raise InputError(f"{path}: header says {n} bases, found {len(rows)}")
    title = lines[0].split(maxsplit=1)[1] if len(lines[0].split()) > 1 else Path(path).stem
    return Record(title.split()[0] if title else Path(path).stem, seq, _pairs_from_partners(path, partners))


def read_fasta(path: Path, with_structure: bool = False) -> list[Record]:
    """FASTA records; with ``with_structure``, each sequence line is followed by a
    dot-bracket line (an RNAfold-style trailing energy is ignored)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    records: list[Record] = []
    body: list[str] = []

    def flush():
        if not records:
            return
        rec = records[-1]
        if with_structure:
            if len(body) < 2:
                raise InputError(f"{path}: record {rec.name!r} has no dot-bracket line")
            db = body[-1].split()[0]
            rec.seq = "".join(body[:-1]).upper()
            try:
                rec.pairs = validate_pairs(pairs_from_db(db), len(rec.seq))
            except StructureError as exc:
                raise InputError(f"{path}: record {rec.name!r}: {exc}") from None
            if len(db) != len(rec.seq):
                raise InputError(f"{path}: record {rec.name!r}: structure length {len(db)} != sequence length {len(rec.seq)}")
        else:
            rec.seq = "".join(body).upper()

    for line in read_text(path).splitlines():
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith(">"):
            flush()
            records.append(Record(line[1:].split()[0] if line[1:].split() else f"seq{len(records) + 1}", ""))
            body = []
        elif not records:
            raise InputError(f"{path}: not FASTA (first record does not start with '>')")
        else:
            body.append(line)
    flush()
    if not records:
        raise InputError(f"{path}: no FASTA record")
    return records


def read_references(path: Path) -> list[Record]:
    """Reference structures: a folder of .bpseq/.ct files (subfolders name the family),
    or a FASTA file with a dot-bracket line after each sequence."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in STRUCTURE_SUFFIXES)
        if not files:
            raise InputError(f"{path}: no .bpseq or .ct files in this folder")
        records = []
        for f in files:
            rec = read_bpseq(f) if f.suffix.lower() == ".bpseq" else read_ct(f)
            rec.name = f.stem
            rec.family = str(f.parent.relative_to(path)) if f.parent != path else ""
            records.append(rec)
        return records
    return read_fasta(path, with_structure=True)


def format_record(name: str, seq: str, pairs, fmt: str, energy: float | None = None) -> str:
    """One record as text in ``fmt``: dot-bracket (RNAfold-like FASTA), bpseq or ct."""
    if fmt == "dot-bracket":
        tail = f" ({energy:6.2f})" if energy is not None else ""
        return f">{name}\n{seq}\n{db_from_pairs(pairs, len(seq))}{tail}\n"
    partner = [0] * len(seq)
    for i, j in pairs:
        partner[i], partner[j] = j + 1, i + 1
    if fmt == "bpseq":
        return f"# {name}\n" + "".join(f"{k + 1} {b} {partner[k]}\n" for k, b in enumerate(seq))
    if fmt == "ct":
        n = len(seq)
        return f"{n} {name}\n" + "".join(
            f"{k + 1} {b} {k} {k + 2 if k + 1 < n else 0} {partner[k]} {k + 1}\n" for k, b in enumerate(seq))
    raise ValueError(f"unknown format {fmt!r}")
