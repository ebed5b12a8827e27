"""The memory a fold may take: what the system has available, under the limits of this
process's cgroup (a SLURM job, a container) when those are lower."""
from __future__ import annotations

from pathlib import Path


def available_memory() -> int | None:
    """Bytes of memory a new allocation can take: Linux's ``MemAvailable``, or less where
    this process's cgroup (a SLURM job, a container) has a lower limit; None where the
    system says neither."""
    found = cgroup_headroom()
    try:
        with open("/proc/meminfo") as f:
            found += [int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:")]
    except OSError:
        pass
    return min(found) if found else None


def cgroup_headroom(proc_cgroup: Path = Path("/proc/self/cgroup"), mount: Path = Path("/sys/fs/cgroup")) -> list[int]:
    """Bytes left under each memory limit of this process's cgroup and of its ancestors
    (cgroup v2's ``memory.max``, or v1's memory controller), as ``proc_cgroup`` names it
    under ``mount``; a scheduler may set the limit on a parent of the process's own."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            root, limit_file, usage_file = mount, "memory.max", "memory.current"
        elif "memory" in controllers.split(","):
            root, limit_file, usage_file = mount / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes"
        else:
            continue
        folder = root / path.strip("/")
        for level in [folder, *folder.parents]:
            try:
                limit = (level / limit_file).read_text().strip()
                if limit != "max":
                    out.append(int(limit) - int((level / usage_file).read_text()))
            except (OSError, ValueError):
                pass
            if level == root:
                break
    return out
