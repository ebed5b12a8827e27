"""S1 inference on CPU: network forward vs decoding, and our decoder vs the per-pixel reference.

For lengths 40, 100, 200 (one sequence each): forward time of the notebook's run_32
network and of a small one (random weights); then, on the small network's outputs with
p_on rescaled so about 3% of upper-triangle pixels pass --threshold, the time of
``stembb.s1.predict.decode_proposals`` and of the slow per-pixel reference the tests check
it against (tests/reference_decode.py), as ratios. Aim at length 200: the
decoder >= 50x faster than the reference and < 10% of the small network's forward pass.
Last, batched throughput of the small network (forward + decode) in sequences/s.

    python bench/bench_s1_inference.py [--skip_run32]
"""
import argparse
import importlib.util
import time
from pathlib import Path

import numpy as np
import torch

from stembb.cli import HelpFormatter
from stembb.s1.model import named_network
from stembb.s1.predict import decode_proposals, predict_maps

NETWORKS = ("run_32", "small")  # stembb.s1.model.NAMED_NETWORKS
REFERENCE = Path(__file__).resolve().parent.parent / "tests" / "reference_decode.py"


def load_reference():
    """The per-pixel reference decoder, loaded from the tests folder."""
    spec = importlib.util.spec_from_file_location("reference_decode", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.slow_decode


def best_time(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--threshold", type=float, default=0.1)
    p.add_argument("--skip_run32", action="store_true", help="skip the 22M-parameter network (about 20 s)")
    args = p.parse_args()
    slow_decode = load_reference()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    nets = {name: named_network(name).eval() for name in NETWORKS if name != "run_32" or not args.skip_run32}
    cpu = torch.device("cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; one sequence per call; best of repeats")
    for length in (40, 100, 200):
        seq = "".join(rng.choice(list("ACGU"), length))
        forward = {name: best_time(lambda net=net, seq=seq: predict_maps(net, [seq], cpu), 1 if name == "run_32" else 3)
                   for name, net in nets.items()}
        maps = predict_maps(nets["small"], [seq], cpu)[0]
        upper = maps["p_on"][np.triu_indices(length, 1)]
        maps["p_on"] = np.clip(maps["p_on"] * (args.threshold / np.quantile(upper, 0.97)), 0, 1).astype(np.float32)
        share = (maps["p_on"][np.triu_indices(length, 1)] > args.threshold).mean()
        fast = best_time(lambda maps=maps, seq=seq: decode_proposals(maps, seq, args.threshold), 5)
        slow = best_time(lambda maps=maps, seq=seq: slow_decode(maps, seq, args.threshold), 1)
        n = len(decode_proposals(maps, seq, args.threshold))
        print(f"L={length:3d}: forward " + ", ".join(f"{k} {v * 1000:8.1f} ms" for k, v in forward.items())
              + f" | {100 * share:.1f}% pixels pass, {n} boxes | decode {fast * 1000:6.2f} ms, reference "
              f"{slow * 1000:7.1f} ms: {slow / fast:6.1f}x faster; decode = {100 * fast / forward['small']:.1f}% "
              "of small forward")
    seqs = ["".join(rng.choice(list("ACGU"), 100)) for _ in range(64)]
    t = time.perf_counter()
    for seq, m in zip(seqs, predict_maps(nets["small"], seqs, cpu, batch_size=16)):
        decode_proposals(m, seq, args.threshold)
    print(f"batched (16 x length 100, small network, forward + decode): {len(seqs) / (time.perf_counter() - t):.1f} sequences/s")


if __name__ == "__main__":
    main()
