"""What a deep S1 costs at prediction, on CPU: sequences per second of the grammar model
alone (the shipped ``models/stembb_s2.pth``) and of the same grammar with a deep S1
(``--s2_model`` a checkpoint of ``train_s2_grammar.py --deep_s1``, or by default a
randomly initialised ``--network`` over the shipped grammar: the same work), batched
(one call for all --num sequences) at each --lengths, in the same run, with the ratio.
The issue's bound: at most 2x the grammar alone at 200 nt.

    python bench/bench_deep_s1.py [--s2_model result/deep_s1.pth] [--num 20] [--lengths 100 200]
"""
import argparse
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from stembb.checkpoint import S2_GRAMMAR_KIND, read_arrays
from stembb.cli import HelpFormatter
from stembb.grammar.model import GrammarFold
from stembb.pipeline import SHIPPED_S2, GrammarPredictor, predictor_from_checkpoints
from stembb.s1.model import DEEP_NETWORKS, build_model


def rate(predictor, seqs) -> float:
    predictor.predict(seqs[:1])  # compiled passes loaded, network warmed
    started = time.perf_counter()
    predictor.predict(seqs)
    return len(seqs) / (time.perf_counter() - started)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--s2_model", type=Path, default=None, help="a grammar model with a deep S1")
    p.add_argument("--network", choices=sorted(DEEP_NETWORKS), default="deep16",
                   help="without --s2_model: a random network of this kind over the shipped grammar")
    p.add_argument("--num", type=int, default=20)
    p.add_argument("--lengths", type=int, nargs="+", default=[100, 200])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    alone = predictor_from_checkpoints(None, SHIPPED_S2)
    if args.s2_model is None:
        fold = GrammarFold.from_state(read_arrays(SHIPPED_S2, S2_GRAMMAR_KIND))
        fold.network = build_model(asdict(DEEP_NETWORKS[args.network])).eval()
        deep = GrammarPredictor(fold)
        label = f"random {args.network}"
    else:
        deep = predictor_from_checkpoints(None, args.s2_model, device="cpu")
        label = str(args.s2_model)
    rng = np.random.default_rng(args.seed)
    print(f"torch threads {torch.get_num_threads()}; deep S1: {label}")
    for length in args.lengths:
        seqs = ["".join(rng.choice(list("ACGU"), length)) for _ in range(args.num)]
        base, with_s1 = rate(alone, seqs), rate(deep, seqs)
        print(f"{length} nt, {args.num} batched: grammar alone {base:.1f} seq/s, with deep S1 {with_s1:.1f} seq/s, "
              f"time ratio {base / with_s1:.2f}x (bound: 2x)")


if __name__ == "__main__":
    main()
