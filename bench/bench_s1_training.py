"""S1 training throughput on CPU, the share of step time spent waiting for data, and the
loader's own throughput.

1. For the notebook's run_25 network and the main job's small one
   (``stembb.s1.model.NAMED_NETWORKS``), on length-40 multi-struct data
   with batch 10: examples per second of full training steps fed by the real DataLoader
   (--cpu workers), against the same steps on batches already in memory (the baseline,
   measured in the same run). The difference is the loader wait; aim: under 10%.
2. The loader alone (what a GPU would wait for): examples per second at 40 and 200 nt,
   with 0, 2 and 8 worker processes, for the packed uint8 targets against the former
   nine-tensor targets (int64 class maps), both measured in this run.

    python bench/bench_s1_training.py [--steps 20] [--cpu 2]
"""
import argparse
import time

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from stembb.cli import HelpFormatter
from stembb.data.datagen import FoldJob, generate
from stembb.s1.engine import s1_losses
from stembb.s1.targets import one_hot, stem_targets, unpack_targets
from stembb.data.genome import DEFAULT_ANNOTATION, DEFAULT_GENOME, Genome, iter_segments
from stembb.s1.model import named_network
from stembb.s1.dataset import LengthBatchSampler, StemBoxDataset, collate

NETWORKS = ("run_25", "small")  # stembb.s1.model.NAMED_NETWORKS


def make_data(n_segments: int, length: int = 40, num_sample: int = 10) -> pd.DataFrame:
    genome = Genome(DEFAULT_GENOME, DEFAULT_ANNOTATION)
    genes, _ = genome.usable_genes(["chr3", "chr4"])
    rows, _, _, _ = generate(genome, iter_segments(genes, 0, 100, length=length), FoldJob(seed=0, num_sample=num_sample),
                          n_segments, 1, "bench data")
    return pd.DataFrame(rows)


class UnpackedDataset(Dataset):
    """The former loader's items: the targets dict of nine maps (int64 class maps)."""

    def __init__(self, seqs, boxes):
        self.seqs, self.boxes = list(seqs), list(boxes)

    def __len__(self):
        return len(self.seqs)

    def __getitem__(self, k):
        return one_hot(self.seqs[k]), stem_targets(len(self.seqs[k]), self.boxes[k], 2)


def unpacked_collate(items):
    """The former collate: one padded tensor per target map, plus ``valid``."""
    n = max(x.shape[1] for x, _ in items)
    xs = torch.zeros(len(items), 4, n)
    targets = {k: torch.zeros((len(items), n, n), dtype=torch.from_numpy(v).dtype) for k, v in items[0][1].items()}
    targets["valid"] = torch.zeros((len(items), n, n), dtype=torch.bool)
    for b, (x, t) in enumerate(items):
        length = x.shape[1]
        xs[b, :, :length] = torch.from_numpy(x)
        for k, v in t.items():
            targets[k][b, :length, :length] = torch.from_numpy(v)
        targets["valid"][b, :length, :length] = True
    return xs, targets


def loader_rate(dataset, collate_fn, lengths, batch_size, workers, n_batches) -> float:
    """Examples per second a DataLoader delivers (after its first batch), nothing else."""
    sampler = LengthBatchSampler(lengths, batch_size, True, 0)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn, num_workers=workers,
                        prefetch_factor=4 if workers else None)
    n, it = 0, iter(loader)
    next(it)
    t = time.perf_counter()
    for _ in range(n_batches):
        try:
            x, _ = next(it)
        except StopIteration:
            break
        n += x.shape[0]
    return n / (time.perf_counter() - t)


def step(model, optimizer, x, packed):
    targets = unpack_targets(packed)
    loss = sum(s1_losses(model(x, targets["valid"][:, :, 0].sum(1)), targets, 0.0).values())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def measure(name, batches, loader, steps):
    """Seconds for ``steps`` steps on in-memory batches, and fed by ``loader``."""
    torch.manual_seed(0)
    model = named_network(name)
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
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
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
    for name in NETWORKS:
        loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=args.cpu)
        steps = args.steps if name == "small" else max(3, args.steps // 4)
        in_memory, fed = measure(name, batches, loader, steps)
        n = steps * args.batch_size
        print(f"{name:7s}: {n / fed:7.1f} examples/s fed by the loader, {n / in_memory:7.1f} on in-memory batches; "
              f"loader wait {100 * max(fed - in_memory, 0) / fed:4.1f}% of step time (aim < 10%)")
    print("\nloader alone, examples/s (batch %d): packed uint8 targets vs the former nine-tensor targets" %
          args.batch_size)
    for length, data in ((40, df), (200, make_data(60, length=200, num_sample=0))):
        seqs, boxes = data["seq"].tolist(), data["bounding_boxes"].tolist()
        lengths = np.array([len(s) for s in seqs])
        n_batches = 40 if length == 40 else 12
        for workers in (0, 2, 8):
            packed = loader_rate(StemBoxDataset(seqs, boxes, 2), collate, lengths, args.batch_size, workers, n_batches)
            old = loader_rate(UnpackedDataset(seqs, boxes), unpacked_collate, lengths, args.batch_size, workers,
                              n_batches)
            print(f"  {length:3d} nt, {workers} workers: packed {packed:8.1f}, former {old:8.1f}  "
                  f"(x{packed / old:.2f})")


if __name__ == "__main__":
    main()
