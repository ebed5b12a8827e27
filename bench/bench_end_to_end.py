"""End-to-end prediction speed on CPU against RNAfold (ViennaRNA MFE) in the same run.

For lengths 50, 100, 200 (--num sequences each) and 1,000 (--num_long): sequences per
second of the predict_structure pipeline one sequence per call, with S1 forward, S1 decoding, S2
(examples + network) and structure decoding timed separately (and everything after the
S1 forward as a share of it), and all of them in one call (batched), and of
ViennaRNA's MFE fold on the same sequences, printed as a ratio (and, for scale, its fold
with the partition function and pair probabilities, RNAfold -p, which is what the
grammar model computes). Models:
--s1_model/--s2_model checkpoints (scripts/demo.sh writes them), or random small networks
(box transformer S2) with the S1 threshold set so about 3% of pixels pass. Last, at 200
nt: the structure assembly alone, and the grammar's partition function (inside-outside,
``stembb.grammar.partition``) over every canonical pair against one S1 forward pass (medians
of 5). With a grammar model, long RNAs (--long, LENGTH:SPAN, SPAN "whole" for none, "beamB"
for a whole fold by beam search keeping B states):
one random sequence folded in a fresh process by the predictor with that --max_span and
by RNAfold (``RNA.fold_compound`` MFE with the same ``max_bp_span``), each process's
fold time (after start-up and a warm-up fold) and peak memory (whole process, model and
libraries included). With a grammar model, last: one 100-nt sequence from the shell, the
whole process (``stembb-fold`` against ``python -c "import RNA; RNA.fold(...)"``, medians of
--shell_runs runs).

    python bench/bench_end_to_end.py [--s1_model S1.pth --s2_model S2.pth] [--num 10]
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dataclasses import asdict

from stembb.cli import HelpFormatter
from stembb.data.folding import fold
from stembb.pipeline import Predictor, predictor_from_checkpoints
from stembb.s1.model import named_network
from stembb.s1.predict import predict_maps
from stembb.grammar.assemble import assemble
from stembb.s2.boxnet import BoxNetConfig, build_boxnet
from stembb.grammar.model import allowed_pairs
from stembb.grammar.terms import LoopTerms
from stembb.s2.predictor import BoxPredictor
from stembb.s2.engine import S2_MODELS
from stembb.grammar.partition import ensemble


def median_seconds(call, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def random_predictor(rng) -> Predictor:
    torch.manual_seed(0)
    s1 = named_network("small").eval()
    probe = "".join(rng.choice(list("ACGU"), 100))
    p_on = predict_maps(s1, [probe], torch.device("cpu"))[0]["p_on"][np.triu_indices(100, 1)]
    config = asdict(BoxNetConfig())
    return BoxPredictor(s1, build_boxnet(config).eval(), S2_MODELS["box"], config, torch.device("cpu"),
                     threshold=float(np.quantile(p_on, 0.97)))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--s1_model")
    p.add_argument("--s2_model")
    p.add_argument("--num", type=int, default=16, help="sequences per length (and the batch size)")
    p.add_argument("--num_long", type=int, default=4, help="sequences of 1,000 nt")
    p.add_argument("--long", nargs="*", default=["2000:whole", "2000:beam100", "5000:300", "10000:beam100"],
                   help="LENGTH:SPAN cases of the long-RNA section (grammar models); SPAN beamB folds whole by beam "
                        "search keeping B states (RNAfold whole beside it, up to --rnafold_whole nt)")
    p.add_argument("--rnafold_whole", type=int, default=5000,
                   help="the longest whole fold RNAfold runs in the long-RNA section (its time grows as L^3)")
    p.add_argument("--shell_runs", type=int, default=5, help="runs of the whole-process start-up timing")
    p.add_argument("--dask_seqs", type=int, default=2000, help="sequences of the Dask section (0: leave it out)")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    cpu = torch.device("cpu")
    predictor = (predictor_from_checkpoints(args.s1_model, args.s2_model, "cpu") if args.s1_model
                 else random_predictor(rng))
    predictor.batch_size = args.num
    predictor.predict(["".join(rng.choice(list("ACGU"), 60))])  # warm-up
    if predictor.is_grammar:
        s2 = f"grammar model, S1 evidence {'used' if predictor.reads_s1 else 'unused (weight 0)'}"
    else:
        s2 = f"S2 network {'runs' if predictor.s2_spec.uses_logits(predictor.s2_model) else 'skipped (logit weight 0)'}"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; models: "
          f"{'checkpoints' if args.s1_model else 'random small networks'}; {s2}")
    for length, num in ((50, args.num), (100, args.num), (200, args.num), (1000, args.num_long)):
        seqs = ["".join(rng.choice(list("ACGU"), length)) for _ in range(num)]
        predictor.timings = dict.fromkeys(predictor.timings, 0.0)
        t = time.perf_counter()
        for seq in seqs:
            predictor.predict([seq])
        ours = time.perf_counter() - t
        timings = dict(predictor.timings)
        t = time.perf_counter()
        for seq in seqs:
            fold(seq, partition=False)
        vienna = time.perf_counter() - t
        t = time.perf_counter()
        for seq in seqs:
            fold(seq, partition=True)
        vienna_pf = time.perf_counter() - t
        predictor.predict(seqs)  # warm-up: a new batch shape sets up its kernels once
        t = time.perf_counter()
        predictor.predict(seqs)
        batched = time.perf_counter() - t
        parts = ", ".join(f"{k} {1000 * v / num:.1f}" for k, v in timings.items())
        after = ""
        if predictor.reads_s1:  # else S1 does not run
            share = (timings["s1_decode"] + timings["s2"] + timings["structure"]) / timings["s1_forward"]
            after = (f"; after the S1 forward: {100 * share:.0f}% of it; structure "
                     f"{100 * timings['structure'] / timings['s1_forward']:.0f}%")
        print(f"L={length:4d}: stembb {num / ours:6.1f} seq/s (ms per seq: {parts}{after}); "
              f"batches of {min(predictor.batch_size, num)}: {num / batched:6.1f} seq/s | "
              f"RNAfold {num / vienna:7.1f} seq/s, {batched / vienna:5.1f}x the batched rate; "
              f"RNAfold -p {num / vienna_pf:7.1f} seq/s")
    length = 200
    i, j = np.triu_indices(length, 4)
    keep = rng.random(len(i)) < 0.04
    seq = "".join(rng.choice(list("ACGU"), length))
    pairs = np.stack([i[keep], j[keep]], 1)
    t = time.perf_counter()
    assemble(seq, pairs, rng.normal(size=len(pairs)), LoopTerms().numpy())
    print(f"structure assembly alone at {length} nt ({len(pairs)} candidates): {1000 * (time.perf_counter() - t):.0f} ms")
    pairs = allowed_pairs(seq)
    terms = LoopTerms().numpy()
    terms["stack"][:6, :6], terms["hairpin"][:], terms["multi"][:] = 2.0, -4.0, (-5.0, -0.5)
    unary = np.full(len(pairs), -1.0)
    ensemble(seq, pairs, unary, terms)  # compiled on first call
    inside_outside = median_seconds(lambda: ensemble(seq, pairs, unary, terms))
    s1 = predictor.s1_model if predictor.s1_model is not None else named_network("small").eval()
    with torch.no_grad():
        forward = median_seconds(lambda: predict_maps(s1, [seq], cpu))
    print(f"partition function at {length} nt over all {len(pairs)} canonical pairs: {1000 * inside_outside:.1f} ms, "
          f"{inside_outside / forward:.2f}x one S1 forward pass ({1000 * forward:.1f} ms)")
    if predictor.is_grammar:
        for case in args.long:
            length, span = case.split(":")
            beam = int(span[4:]) if span.startswith("beam") else 0
            limit = None if span == "whole" or beam else int(span)
            seq = "".join(rng.choice(list("ACGU"), int(length)))
            ours = fold_in_child("stembb", seq, limit, args.s1_model if predictor.reads_s1 else None, args.s2_model,
                                 beam)
            line = f"{length} nt, span {span}: stembb {ours['seconds']:.1f} s, peak {ours['peak_gb']:.2f} GB | "
            if limit is None and int(length) > args.rnafold_whole:
                print(line + f"RNAfold whole not run (over --rnafold_whole {args.rnafold_whole} nt)")
                continue
            vienna = fold_in_child("RNAfold", seq, limit)
            print(line + f"RNAfold {vienna['seconds']:.1f} s, peak {vienna['peak_gb']:.2f} GB | "
                  f"stembb / RNAfold time {ours['seconds'] / vienna['seconds']:.2f}x")
        seq = "".join(rng.choice(list("ACGU"), 100))
        ours = shell_seconds([str(Path(sys.executable).with_name("stembb-fold")), "--s2_model", args.s2_model],
                             f">one\n{seq}\n", args.shell_runs)
        vienna = shell_seconds([sys.executable, "-c", f"import RNA; print(RNA.fold({seq!r})[0])"], "", args.shell_runs)
        print(f"one 100-nt sequence from the shell, whole process: stembb-fold {ours:.2f} s | python + RNA.fold "
              f"{vienna:.2f} s | {ours / vienna:.1f}x")
        if args.dask_seqs:
            dask_rates(args.s2_model, args.dask_seqs, rng)


CHILD = """
import json, sys, time
tool, seq, span, s1, s2, beam = json.loads(sys.argv[1])
if tool == "stembb":
    import stembb
    predictor = stembb.load_predictor(s2_model=s2, max_span=span, beam=beam, **({"s1_model": s1} if s1 else {}))
    run = lambda s: predictor.predict([s])
else:
    import RNA
    def run(s):
        md = RNA.md()
        if span is not None:
            md.max_bp_span = span
        RNA.fold_compound(s, md).mfe()
run(seq[:100])
start = time.perf_counter()
run(seq)
seconds = time.perf_counter() - start
with open("/proc/self/status") as f:  # VmHWM: this process's peak; ru_maxrss would count the parent's at fork
    peak_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "peak_gb": peak_kb / 1e6}))
"""


def dask_rates(s2_model: str, num: int, rng) -> None:
    """``stembb-fold`` over ``num`` random 100-nt sequences, whole process: on one core
    (``taskset``), on every core of one process (its thread pool), and ``--dask local:N``
    with N the cores."""
    import os
    import tempfile
    cores = len(os.sched_getaffinity(0))
    fold_cmd = [str(Path(sys.executable).with_name("stembb-fold")), "--s2_model", s2_model]
    with tempfile.TemporaryDirectory() as tmp:
        fasta = Path(tmp) / "many.fa"
        fasta.write_text("".join(f">r{k}\n{''.join(rng.choice(list('ACGU'), 100))}\n" for k in range(num)))
        one_core = shell_seconds(["taskset", "-c", str(min(os.sched_getaffinity(0))), *fold_cmd, "--fasta",
                                  str(fasta), "--out", f"{tmp}/a.db"], "", 1)
        threads = shell_seconds([*fold_cmd, "--fasta", str(fasta), "--out", f"{tmp}/b.db"], "", 1)
        dask = shell_seconds([*fold_cmd, "--fasta", str(fasta), "--out", f"{tmp}/c.db", "--dask", f"local:{cores}"],
                             "", 1)
        same = (Path(tmp) / "a.db").read_bytes() == (Path(tmp) / "b.db").read_bytes() == (Path(tmp) / "c.db").read_bytes()
    print(f"{num} sequences of 100 nt, whole process: one core {num / one_core:.0f} seq/s | one process on {cores} "
          f"cores {num / threads:.0f} seq/s ({one_core / threads:.2f}x) | --dask local:{cores} {num / dask:.0f} seq/s "
          f"({one_core / dask:.2f}x one core); outputs identical: {same}")


def shell_seconds(command: list[str], stdin: str, runs: int) -> float:
    """Median wall time of ``command`` as a new process (start-up, imports and all)."""
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(command, input=stdin, capture_output=True, text=True, check=True)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def fold_in_child(tool: str, seq: str, span: int | None, s1=None, s2=None, beam: int = 0) -> dict:
    """Fold time (s) and whole-process peak memory (GB) of one sequence in a new process."""
    arg = json.dumps([tool, seq, span, s1, s2, beam])
    out = subprocess.run([sys.executable, "-c", CHILD, arg], capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


if __name__ == "__main__":
    main()
