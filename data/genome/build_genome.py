"""Build the embedded default genome (data/genome/) from registry packages.

Sequence: Debian ``augustus-doc`` ships three real hg19 slices of 2 Mb
(``/usr/share/doc/augustus/tutorial/data/chr{3.42M,4.103M,5.124M}.fa``).
Genes: PyPI ``openspliceai==0.0.7`` ships ``openspliceai/variant/annotations/grch37.txt``
(GENCODE-derived canonical transcripts, 0-based starts). Genes lying wholly inside a slice
are written as GTF gene/transcript/exon records in slice coordinates (1-based).

The slice offset is checked, not assumed: for offsets around the one in each header,
the share of introns reading GT..AG on the transcribed strand is computed and the best
offset is used (it must be well above 90%).

Re-run (as root, offline registries are enough):
    apt-get install -y augustus-doc
    pip download --no-deps openspliceai==0.0.7 -d /tmp/osa
    python data/genome/build_genome.py --wheel /tmp/osa/openspliceai-0.0.7-py3-none-any.whl
"""
import argparse
import gzip
import io
import zipfile
from pathlib import Path

from stembb.cli import HelpFormatter
from stembb.data.genome import reverse_complement

AUGUSTUS_DIR = Path("/usr/share/doc/augustus/tutorial/data")
SLICES = ("chr3.42M.fa", "chr4.103M.fa", "chr5.124M.fa")
TABLE = "openspliceai/variant/annotations/grch37.txt"
OUT = Path(__file__).resolve().parent


def read_slice(path: Path) -> tuple[str, int, int, str]:
    """(contig, header start, header end, sequence upper-cased) of one augustus slice."""
    lines = path.read_text().split("\n")
    contig, start, end = lines[0][1:].split()
    return contig, int(start), int(end), "".join(lines[1:]).upper()


def read_table(wheel: Path) -> list[dict]:
    with zipfile.ZipFile(wheel) as z:
        text = z.read(TABLE).decode()
    rows = []
    for line in io.StringIO(text):
        if line.startswith("#"):
            continue
        name, chrom, strand, tx_start, tx_end, ex_starts, ex_ends = line.rstrip("\n").split("\t")
        rows.append({"name": name, "chrom": "chr" + chrom, "strand": strand,
                     "tx_start": int(tx_start), "tx_end": int(tx_end),
                     "exons": list(zip(map(int, ex_starts.strip(",").split(",")),
                                       map(int, ex_ends.strip(",").split(","))))})
    return rows


def introns_gt_ag(tx: list[dict], seq: str, shift: int) -> tuple[int, int]:
    """(GT..AG introns, all introns) when genomic 0-based position p is seq[p - shift]."""
    good = total = 0
    for t in tx:
        for (_, e1), (s2, _) in zip(t["exons"], t["exons"][1:]):
            intron = seq[e1 - shift:s2 - shift]  # 0-based half-open intron
            if t["strand"] == "-":
                intron = reverse_complement(intron)
            total += 1
            good += intron[:2] == "GT" and intron[-2:] == "AG"
    return good, total


def gtf_lines(t: dict, shift: int, source: str = "openspliceai_grch37") -> list[str]:
    """GTF records (1-based inclusive, slice coordinates) of one canonical transcript."""
    attrs = f'gene_id "{t["name"]}"; gene_name "{t["name"]}"; gene_type "protein_coding";'
    tx_attrs = attrs + f' transcript_id "{t["name"]}.canonical";'
    rec = lambda feature, s, e, a: "\t".join(  # noqa: E731
        [t["chrom"], source, feature, str(s - shift + 1), str(e - shift), ".", t["strand"], ".", a])
    out = [rec("gene", t["tx_start"], t["tx_end"], attrs), rec("transcript", t["tx_start"], t["tx_end"], tx_attrs)]
    for n, (s, e) in enumerate(t["exons"], 1):
        out.append(rec("exon", s, e, tx_attrs + f" exon_number {n};"))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--wheel", type=Path, required=True, help="openspliceai-0.0.7 wheel")
    p.add_argument("--augustus_dir", type=Path, default=AUGUSTUS_DIR)
    args = p.parse_args()
    table = read_table(args.wheel)
    fasta, gtf = [], []
    good_all = total_all = 0
    for name in SLICES:
        contig, h_start, h_end, seq = read_slice(args.augustus_dir / name)
        tx = [t for t in table if t["chrom"] == contig and t["tx_start"] >= h_start and t["tx_end"] <= h_start + len(seq) - 1]
        scores = {shift: introns_gt_ag(tx, seq, shift) for shift in range(h_start - 2, h_start + 3)}
        shift = max(scores, key=lambda s: scores[s][0])
        good, total = scores[shift]
        tx = [t for t in tx if t["tx_end"] - shift <= len(seq)]
        print(f"{contig}: header {h_start}-{h_end}, {len(seq)} bp; best offset: seq[0] is 0-based hg19 "
              f"position {shift} (1-based {shift + 1}); {len(tx)} genes; GT-AG introns {good}/{total} "
              f"({100 * good / max(total, 1):.1f}%); other offsets: "
              + ", ".join(f"{s}: {g}/{n}" for s, (g, n) in scores.items() if s != shift))
        good_all += good
        total_all += total
        fasta.append(f">{contig}\n" + "\n".join(seq[k:k + 60] for k in range(0, len(seq), 60)) + "\n")
        for t in sorted(tx, key=lambda t: t["tx_start"]):
            gtf.extend(gtf_lines(t, shift))
    share = good_all / total_all
    print(f"all slices: GT-AG introns {good_all}/{total_all} ({100 * share:.1f}%)")
    if share < 0.9:
        raise SystemExit("GT-AG share below 90%: coordinates do not match, nothing written")
    (OUT / "genome.fa").write_text("".join(fasta))
    with gzip.GzipFile(OUT / "genes.gtf.gz", "wb", mtime=0) as fh:
        fh.write(("\n".join(gtf) + "\n").encode())
    n_genes = sum(line.split("\t")[2] == "gene" for line in gtf)
    print(f"wrote {OUT / 'genome.fa'} and {OUT / 'genes.gtf.gz'} ({n_genes} genes)")


if __name__ == "__main__":
    main()
