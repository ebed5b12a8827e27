"""S1 training throughput on CPU, and the share of step time spent waiting for data.

For the notebook's run_25 network (--num_filters 128 128 --filter_width 9 9
--hid_shared 50 50 50 --hid_output 20) and a small one, on length-40 multi-struct data
with batch 10: examples per second of full training steps fed by the real DataLoader
(--cpu workers), against the same steps on batches already in memory (the baseline,
measured in the same run). The difference is the loader wait; aim: under 10%.

    python bench/bench_s1_training.py [--steps 20] [--cpu 2]
"""
import argparse
import time

import pandas as pd
import torch
from torch.utils.data import DataLoader

from stembb.data.datagen import FoldJob, generate
from stembb.s1.engine import s1_losses
from stembb.data.genome import DEFAULT_ANNOTATION, DEFAULT_GENOME, Genome, iter_segments
from stembb.s1.model import SimpleConvNet
from stembb.s1.dataset import LengthBatchSampler, StemBoxDataset, collate

NETWORKS = {
    "run_25": ([128, 128], [9, 9], [50, 50, 50], 20),
    "small": ([32, 32], [5, 5], [32, 32], 16),
}


def make_data(n_segments: int) -> pd.DataFrame:
    genome = Genome(DEFAULT_GENOME, DEFAULT_ANNOTATION)
    genes, _ = genome.usable_genes(["chr3", "chr4"])
    rows, _, _ = generate(genome, iter_segments(genes, 0, 100, length=40), FoldJob(seed=0, num_sample=10),
                          n_segments, 1, "bench data")
    return pd.DataFrame(rows)


def step(model, optimizer, x, targets):
    loss = sum(s1_losses(model(x), targets, 0.0).values())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def measure(net, batches, loader, steps):
    """Seconds for ``steps`` steps on in-memory batches, and fed by ``loader``."""
    torch.manual_seed(0)
    model = SimpleConvNet(*net)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    step(model, optimizer, *batches[0])  # warm-up
    t = time.perf_counter()
    for k in range(steps):
        step(model, optimizer, *batches[k % len(batches)])
    in_memory = time.perf_counter() - t
    it = iter(loader)
    next(it)  # workers started
    t = time.perf_counter()
    for _ in range(steps):
        step(model, optimizer, *next(it))
    return in_memory, time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cpu", type=int, default=2, help="loader workers, as --cpu of the training script")
    p.add_argument("--batch_size", type=int, default=10)
    args = p.parse_args()
    df = make_data(200)
    ds = StemBoxDataset(df["seq"].tolist(), df["bounding_boxes"].tolist(), 2)
    sampler = LengthBatchSampler(df["seq"].str.len(), args.batch_size, True, 0)
    batches = [collate([ds[i] for i in b]) for b in list(sampler)[:10]]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size} of 40-mers, "
          f"--cpu {args.cpu}")
    for name, net in NETWORKS.items():
        loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=args.cpu)
        steps = args.steps if name == "small" else max(3, args.steps // 4)
        in_memory, fed = measure(net, batches, loader, steps)
        n = steps * args.batch_size
        print(f"{name:7s}: {n / fed:7.1f} examples/s fed by the loader, {n / in_memory:7.1f} on in-memory batches; "
              f"loader wait {100 * max(fed - in_memory, 0) / fed:4.1f}% of step time (aim < 10%)")


if __name__ == "__main__":
    main()
