"""Predict secondary structures for the sequences of a FASTA file with S1 + S2 (the
notebook's script; the same as the ``stembb-fold`` command, ``stembb.fold_cli``).

    python evaluation/predict_structure.py --s1_model S1.pth --s2_model S2.pth --fasta in.fa \
        [--out out.db] [--format dot-bracket|bpseq|ct] [--bpp DIR]
"""
from stembb.fold_cli import run

if __name__ == "__main__":
    run()
