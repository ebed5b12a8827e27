"""DistributedDataParallel set-up for scripts started by torchrun (or as one process)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from stembb.errors import InputError


@dataclass(frozen=True)
class DistInfo:
    """``enabled``: started by torchrun (even as one process), so DDP and a process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def pick_device(flag: str | None, local_rank: int = 0) -> torch.device:
    """``--device`` when given (a bare ``cuda`` means the local rank's GPU); else CUDA
    (the local rank's GPU among those CUDA_VISIBLE_DEVICES shows) when available; else CPU."""
    if flag:
        try:
            device = torch.device(flag)
        except RuntimeError:
            raise InputError(f"--device {flag!r} is not a device (cpu, cuda, cuda:1, ...)") from None
        if device.type not in ("cpu", "cuda"):
            raise InputError(f"--device {flag}: stembb runs on cpu or cuda")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"--device {flag}: CUDA is not available on this machine")
        return torch.device("cuda", local_rank) if device.type == "cuda" and device.index is None else device
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device_flag: str | None) -> tuple[DistInfo, torch.device]:
    """Join the process group when started by torchrun; choose the device.

    Device: see ``pick_device``. Backend: NCCL on GPUs, gloo on CPU.
    """
    info = DistInfo()
    if "RANK" in os.environ:
        info = DistInfo(int(os.environ["RANK"]), int(os.environ.get("WORLD_SIZE", "1")),
                        int(os.environ.get("LOCAL_RANK", "0")), enabled=True)
    if info.world_size > 1 and device_flag and torch.device(device_flag).index is not None:
        raise InputError(f"--device {device_flag} under torchrun would put every rank on one GPU; "
                         "pass --device cuda (each rank takes its local GPU) or leave it out")
    device = pick_device(device_flag, info.local_rank)
    if device.type == "cuda":
        if device.index >= torch.cuda.device_count():
            raise InputError(f"rank {info.rank} needs GPU {device.index}, but only {torch.cuda.device_count()} are "
                             "visible (CUDA_VISIBLE_DEVICES); start at most one process per GPU")
        torch.cuda.set_device(device)
    if info.enabled:
        if device.type == "cuda":
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    return info, device


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo, finished: bool = True) -> None:
    """Leave the process group. After a finished run the ranks meet first: a rank that
    tore gloo down while another still exited its last collective aborted it
    ("terminate called without an active exception") on a loaded machine."""
    if info.enabled and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def synchronized_time(device: torch.device) -> float:
    """``time.perf_counter()`` once the device's queued work is done (for throughput)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
