"""Structure files: Stockholm alignments (Rfam seed), BPSEQ, CT, FASTA and dot-bracket
FASTA (RNAfold style).

Indices in files are 1-based; in memory pairs are 0-based ``(i, j)``, i < j.
"""
from __future__ import annotations

import gzip
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stembb.errors import InputError
from stembb.io import VALID_LETTERS
from stembb.structure import (CANONICAL_TABLE, StructureError, base_codes, db_from_pairs, pairs_from_db, pairs_from_wuss,
                              validate_pairs)

STRUCTURE_SUFFIXES = {".bpseq": "bpseq", ".ct": "ct"}


@dataclass
class Record:
    """One sequence with an optional reference structure. ``family``: the Stockholm
    alignment's accession (``#=GF AC``) or the subfolder of a structure file; ``clan``
    and ``family_name`` (``#=GF CL``, ``#=GF ID``) from Stockholm; ``source``: the file."""

    name: str
    seq: str
    pairs: list | None = None
    family: str = ""
    clan: str = ""
    family_name: str = ""
    source: str = ""


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
    dot-bracket line (an RNAfold-style trailing energy is ignored). ``-`` reads standard
    input; pipes and FIFOs (``/dev/stdin``) are read as files are."""
    path = Path(path)
    if str(path) != "-" and (not path.exists() or path.is_dir()):
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

    text = sys.stdin.read() if str(path) == "-" else read_text(path)
    for line in text.splitlines():
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


ALIGNMENT_GAPS = b".-~"


def _project_alignment(path: Path, info: dict, rows: dict[str, list[str]], ss: str, counts: Counter) -> list[Record]:
    """Per-sequence structures of one alignment: the consensus pairs whose two columns
    hold residues of the sequence, gap columns removed, non-canonical pairs dropped."""
    label = info.get("AC") or info.get("ID") or "(unnamed alignment)"
    if not ss:
        raise InputError(f"{path}: alignment {label} has no '#=GC SS_cons' line")
    try:
        cons = np.array(pairs_from_wuss(ss), dtype=np.int64).reshape(-1, 2)
    except StructureError as exc:
        raise InputError(f"{path}: alignment {label}: SS_cons: {exc}") from None
    records = []
    for name, parts in rows.items():
        aligned = "".join(parts)
        if len(aligned) != len(ss):
            raise InputError(f"{path}: alignment {label}: sequence {name} has {len(aligned)} columns, "
                             f"SS_cons has {len(ss)}")
        cols = np.frombuffer(aligned.encode(), dtype=np.uint8)
        is_res = ~np.isin(cols, np.frombuffer(ALIGNMENT_GAPS, dtype=np.uint8))
        res_index = np.cumsum(is_res) - 1
        seq = cols[is_res].tobytes().decode().upper()
        both = is_res[cons[:, 0]] & is_res[cons[:, 1]]
        counts["consensus pairs on a gap"] += int((~both).sum())
        pairs = res_index[cons[both]]
        codes = base_codes(seq)
        canonical = CANONICAL_TABLE[codes[pairs[:, 0]], codes[pairs[:, 1]]]
        counts["non-canonical pairs dropped"] += int((~canonical).sum())
        counts["pairs kept"] += int(canonical.sum())
        records.append(Record(name, seq, [(int(i), int(j)) for i, j in pairs[canonical]], info.get("AC", ""),
                              info.get("CL", ""), info.get("ID", ""), Path(path).name))
    return records


def parse_stockholm(text: str, path: Path) -> tuple[list[Record], Counter]:
    """All alignments of a (multi-alignment) Stockholm text; one Record per sequence with
    its projected consensus structure (see ``_project_alignment``), and counts."""
    records: list[Record] = []
    counts: Counter = Counter()
    info: dict[str, str] = {}
    rows: dict[str, list[str]] = {}
    ss: list[str] = []
    opened = False
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.rstrip()
        if line.startswith("# STOCKHOLM"):
            opened = True
        elif line == "//":
            records += _project_alignment(path, info, rows, "".join(ss), counts)
            counts["alignments"] += 1
            info, rows, ss, opened = {}, {}, [], False
        elif line.startswith("#=GF "):
            cols = line.split(maxsplit=2)
            if len(cols) == 3 and cols[1] in ("AC", "ID", "CL"):
                info[cols[1]] = cols[2].strip()
        elif line.startswith("#=GC ") and line.split()[1] == "SS_cons":  # not SS_cons_1, SS_cons_2 ...
            ss.append(line.split()[2] if len(line.split()) == 3 else "")
        elif line.startswith("#") or not line.strip():
            continue
        else:
            cols = line.split()
            if len(cols) != 2:
                raise InputError(f"{path}:{lineno}: expected 'name aligned-sequence', got {len(cols)} fields")
            rows.setdefault(cols[0], []).append(cols[1])
    if opened or rows:
        raise InputError(f"{path}: the last alignment does not end with '//' (truncated file?)")
    if not counts["alignments"]:
        raise InputError(f"{path}: no Stockholm alignment ('# STOCKHOLM 1.0' ... '//')")
    counts["sequences"] = len(records)
    return records, counts


def clean_letters(records: list[Record], iupac: str) -> tuple[list[Record], Counter]:
    """Sequences upper-cased; letters outside ACGTUN (IUPAC codes such as R, Y) mapped to N
    (``iupac='n'``, their pairs dropped) or the sequence skipped (``iupac='skip'``)."""
    kept, counts = [], Counter()
    for rec in records:
        seq = rec.seq.upper()
        bad = [k for k, ch in enumerate(seq) if ch not in VALID_LETTERS]
        if bad:
            if iupac == "skip":
                counts["sequences skipped for IUPAC letters"] += 1
                continue
            counts["sequences with IUPAC letters mapped to N"] += 1
            chars = list(seq)
            for k in bad:
                chars[k] = "N"
            seq = "".join(chars)
            bad_set = set(bad)
            before = len(rec.pairs or [])
            rec.pairs = [p for p in rec.pairs or [] if p[0] not in bad_set and p[1] not in bad_set]
            counts["pairs dropped on IUPAC letters"] += before - len(rec.pairs)
        rec.seq = seq
        kept.append(rec)
    return kept, counts


def read_structures(path: Path) -> tuple[list[Record], Counter]:
    """Records with structures from any supported source: a Stockholm file (plain or
    gzipped, one or many alignments), a folder of .bpseq/.ct files, or a dot-bracket FASTA.
    Records without a family get the file (or folder) name as family, so a split by
    family keeps an unlabelled file on one side."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_file():
        text = read_text(path)
        if text.lstrip().startswith("# STOCKHOLM"):
            return parse_stockholm(text, path)
    records = read_references(path)
    stem = path.name.split(".")[0]
    for rec in records:
        rec.source = path.name
        rec.family = rec.family or stem
    return records, Counter(sequences=len(records))
