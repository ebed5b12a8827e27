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
from typing import Iterator

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
    family_size: int = 0  # the family's sequences in the source (make_structure_dataset.py); 0: unknown


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


def _pairs_from_partners(path: Path, partners: list[int], where: str, strict: bool,
                         counts: Counter) -> list[tuple[int, int]]:
    """The pairs of a partner column (1-based, 0 = unpaired). A base paired with itself or
    with a position outside the record is malformed; a partner that does not point back
    (a base triple written one-sided) is dropped and counted, or refused when ``strict``."""
    pairs = set()
    for i, j in enumerate(partners, 1):
        if j == 0:
            continue
        if j == i:
            raise InputError(f"{path}{where}: base {i} pairs with itself")
        if j > len(partners) or j < 0:
            raise InputError(f"{path}{where}: base {i} pairs with {j}, outside the record's {len(partners)} bases")
        if partners[j - 1] != i:
            if strict:
                raise InputError(f"{path}{where}: base {i} pairs with {j}, which does not pair back")
            counts["one-sided partners dropped"] += 1
            continue
        pairs.add((min(i, j) - 1, max(i, j) - 1))
    return _check_hairpins(path, where, sorted(pairs), strict, counts)


def _check_hairpins(path: Path, where: str, pairs: list[tuple[int, int]], strict: bool,
                    counts: Counter) -> list[tuple[int, int]]:
    """``pairs``; a pair of neighbouring bases (a hairpin with no base, as some real files
    have) is kept and counted, or refused when ``strict``."""
    adjacent = sum(j == i + 1 for i, j in pairs)
    if adjacent and strict:
        i, j = next((i, j) for i, j in pairs if j == i + 1)
        raise InputError(f"{path}{where}: pair ({i + 1}, {j + 1}) closes a hairpin of no base")
    counts["pairs of neighbouring bases kept"] += adjacent
    return pairs


def read_bpseq(path: Path, strict: bool = False, counts: Counter | None = None) -> list[Record]:
    """BPSEQ records: lines ``index base partner`` (partner 0 = unpaired), each record
    starting again at index 1; a ``# name`` line before a record names it (else the file
    name, numbered from the second record), other lines are skipped. ``counts`` collects
    what was dropped or kept of the pairs real files carry (``_pairs_from_partners``)."""
    counts = Counter() if counts is None else counts
    records: list[Record] = []
    seq, partners, name, pending = [], [], "", ""
    stem = Path(path).stem

    def flush():
        if seq:
            label = name or (stem if not records else f"{stem}_{len(records) + 1}")
            records.append(Record(label, "".join(seq).upper(),
                                  _pairs_from_partners(path, partners, f" (record {label!r})", strict, counts)))

    for lineno, line in enumerate(read_text(path).splitlines(), 1):
        cols = line.split()
        if len(cols) != 3 or not cols[0].isdigit():
            if line.startswith("#") and len(cols) > 1:
                pending = cols[1] if cols[0] == "#" else cols[0][1:]
            continue
        if cols[0] == "1" and seq:
            flush()
            seq, partners = [], []
        if not seq:
            name, pending = pending, ""
        if int(cols[0]) != len(seq) + 1 or not cols[2].lstrip("-").isdigit():
            raise InputError(f"{path}:{lineno}: expected 'index base partner' with index {len(seq) + 1}")
        if len(cols[1]) != 1 or not cols[1].isalpha():
            raise InputError(f"{path}:{lineno}: base column {cols[1]!r} is not one letter")
        seq.append(cols[1])
        partners.append(int(cols[2]))
    flush()
    if not records:
        raise InputError(f"{path}: no BPSEQ lines")
    return records


def _is_ct_row(cols: list[str]) -> bool:
    return len(cols) >= 6 and all(c.lstrip("-").isdigit() for c in (cols[0], *cols[2:6]))


def read_ct(path: Path, strict: bool = False, counts: Counter | None = None) -> list[Record]:
    """CT records: each a header ``N title`` then N lines ``index base prev next partner
    index``, indices 1..N in order; ``strict`` and ``counts`` as ``read_bpseq``."""
    counts = Counter() if counts is None else counts
    lines = [(k, line.split()) for k, line in enumerate(read_text(path).splitlines(), 1) if line.strip()]
    records: list[Record] = []
    at = 0
    while at < len(lines):
        lineno, header = lines[at]
        if not header[0].isdigit():
            raise InputError(f"{path}:{lineno}: not a CT header ('N title')")
        n = int(header[0])
        rows = lines[at + 1:at + 1 + n]
        for k, (row_line, cols) in enumerate(rows, 1):
            if not _is_ct_row(cols):
                if k == 1:
                    raise InputError(f"{path}: not a CT file (header 'N title' then N rows of 6 columns)")
                raise InputError(f"{path}:{lineno}: header says {n} bases, found {k - 1}")
            if int(cols[0]) != k:
                raise InputError(f"{path}:{row_line}: index column says {cols[0]}, expected {k}")
        if len(rows) < n:
            raise InputError(f"{path}:{lineno}: header says {n} bases, found {len(rows)}")
        after = lines[at + 1 + n] if at + 1 + n < len(lines) else None
        if after is not None and _is_ct_row(after[1]) and after[1][0] == str(n + 1):
            raise InputError(f"{path}:{lineno}: header says {n} bases, but row {n + 1} follows")
        label = header[1] if len(header) > 1 else Path(path).stem + (f"_{len(records) + 1}" if records else "")
        partners = [int(cols[4]) for _, cols in rows]
        records.append(Record(label, "".join(cols[1] for _, cols in rows).upper(),
                              _pairs_from_partners(path, partners, f" (record {label!r})", strict, counts)))
        at += 1 + n
    if not records:
        raise InputError(f"{path}: not a CT file (header 'N title' then N rows of 6 columns)")
    return records


def _joined_sequence(lines: list[str]) -> str:
    """A FASTA record's sequence lines as one upper-case sequence. ASCII whitespace inside
    a line (``GGGG AAAC``, tabs of wrapped exports) is dropped, as Biopython's and
    ViennaRNA's readers drop it; other characters, a no-break space among them, are left
    for the letter check to name."""
    return "".join(lines).translate(_ASCII_WHITESPACE).upper()


_ASCII_WHITESPACE = str.maketrans("", "", " \t\r\n\v\f")


def text_lines(path: Path) -> Iterator[str]:
    """The lines of a text file, gzip-compressed or not, read as they are needed (a
    UTF-8 byte-order mark dropped); ``-`` reads standard input. One-line InputError
    naming the line that is not UTF-8 text, or a damaged gzip stream."""
    if str(path) == "-":
        yield from sys.stdin
        return
    with open(path, "rb") as raw_file:
        compressed = raw_file.peek(2)[:2] == b"\x1f\x8b"  # peek, not read: a FIFO cannot be opened twice
        f = gzip.GzipFile(fileobj=raw_file) if compressed else raw_file
        try:
            for number, raw in enumerate(f, 1):
                try:
                    yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    raise InputError(f"{path}: not UTF-8 text (line {number}, byte {exc.start + 1}: "
                                     f"{raw[exc.start:exc.start + 1]!r})") from None
        except (OSError, EOFError) as exc:
            if not compressed:
                raise
            raise InputError(f"{path}: damaged gzip file ({exc})") from None


def iter_fasta(path: Path, with_structure: bool = False, strict: bool = False,
               counts: Counter | None = None) -> Iterator[Record]:
    """FASTA records as they are read (a file of any size is never held whole); with
    ``with_structure``, each sequence line is followed by a dot-bracket line (an
    RNAfold-style trailing energy is ignored; ``strict`` and ``counts`` as
    ``read_bpseq``). ``-`` reads standard input; pipes and FIFOs (``/dev/stdin``) are
    read as files are."""
    path = Path(path)
    counts = Counter() if counts is None else counts
    if str(path) != "-" and (not path.exists() or path.is_dir()):
        raise InputError(f"{path}: file not found")
    rec, body, number = None, [], 0

    def finished(rec: Record, body: list[str]) -> Record:
        if with_structure:
            if len(body) < 2:
                raise InputError(f"{path}: record {rec.name!r} has no dot-bracket line")
            db = body[-1].split()[0]
            rec.seq = _joined_sequence(body[:-1])
            try:
                rec.pairs = validate_pairs(pairs_from_db(db), len(rec.seq))
            except StructureError as exc:
                raise InputError(f"{path}: record {rec.name!r}: {exc}") from None
            _check_hairpins(path, f" (record {rec.name!r})", rec.pairs, strict, counts)
            if len(db) != len(rec.seq):
                raise InputError(f"{path}: record {rec.name!r}: structure length {len(db)} != sequence length {len(rec.seq)}")
        else:
            rec.seq = _joined_sequence(body)
        return rec

    for line in text_lines(path):
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith(">"):
            if rec is not None:
                yield finished(rec, body)
            number += 1
            rec, body = Record(line[1:].split()[0] if line[1:].split() else f"seq{number}", ""), []
        elif rec is None:
            raise InputError(f"{path}: not FASTA (first record does not start with '>')")
        else:
            body.append(line)
    if rec is None:
        raise InputError(f"{path}: no FASTA record")
    yield finished(rec, body)


def read_fasta(path: Path, with_structure: bool = False, strict: bool = False,
               counts: Counter | None = None) -> list[Record]:
    """``iter_fasta``'s records, as a list."""
    return list(iter_fasta(path, with_structure, strict, counts))


class FastaFile:
    """The records of a FASTA file, read again from the file on every pass
    (``iter_fasta``), so that a pass over millions of records holds one at a time."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __iter__(self) -> Iterator[Record]:
        return iter_fasta(self.path)


def read_structure_file(path: Path, strict: bool = False, counts: Counter | None = None) -> list[Record]:
    """The records of one .bpseq or .ct file."""
    reader = read_bpseq if Path(path).suffix.lower() == ".bpseq" else read_ct
    return reader(path, strict, counts)


def read_references(path: Path, strict: bool = False, counts: Counter | None = None) -> list[Record]:
    """Reference structures: a folder of .bpseq/.ct files, one such file (one or more
    records), or a FASTA file with a dot-bracket line after each sequence. In a folder, a
    subfolder names the family of its files, and a file of several records directly in
    it is a family of its own (ArchiveII's layout: ``5s.bpseq``, ``tRNA.bpseq``). Pairs are
    kept as the file gives them, non-canonical, crossing and neighbouring ones too
    (unlike Stockholm consensus projections, which drop non-canonical ones): they are
    scored as references. ``strict`` refuses what real files carry (``read_bpseq``)."""
    path = Path(path)
    counts = Counter() if counts is None else counts
    if path.suffix.lower() in STRUCTURE_SUFFIXES and path.is_file():
        return read_structure_file(path, strict, counts)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in STRUCTURE_SUFFIXES)
        if not files:
            raise InputError(f"{path}: no .bpseq or .ct files in this folder")
        records = []
        for f in files:
            recs = read_structure_file(f, strict, counts)
            for k, rec in enumerate(recs):
                rec.name = f.stem if len(recs) == 1 else f"{f.stem}:{rec.name}" if rec.name else f"{f.stem}:{k + 1}"
                rec.family = (str(f.parent.relative_to(path)) if f.parent != path
                              else f.stem if len(recs) > 1 else "")
            records += recs
        return records
    return read_fasta(path, with_structure=True, strict=strict, counts=counts)


def format_record(name: str, seq: str, pairs, fmt: str, energy: float | None = None) -> str:
    """One record as text in ``fmt``: dot-bracket (RNAfold-like FASTA), bpseq or ct."""
    if fmt == "dot-bracket":
        tail = f" ({round(energy, 2) + 0.0:6.2f})" if energy is not None else ""  # + 0.0: no "-0.00"
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


def read_structures(path: Path, strict: bool = False) -> tuple[list[Record], Counter]:
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
    counts: Counter = Counter()
    records = read_references(path, strict, counts)
    stem = path.name.split(".")[0]
    for rec in records:
        rec.source = path.name
        rec.family = rec.family or stem
    return records, +counts + Counter(sequences=len(records))
