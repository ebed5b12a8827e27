"""Run provenance: every script logs its command line, git commit and seed."""
from __future__ import annotations

import logging
import shlex
import subprocess
import sys
from pathlib import Path

from stembb.errors import RUN_LOGS
from stembb.io import REPO_ROOT


def git_commit() -> str:
    """The repository's HEAD commit (with ``-dirty`` when the tree has changes), or 'unknown'."""
    try:
        head = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=10)
        commit = head.stdout.strip() if head.returncode == 0 else ""
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit + ("-dirty" if dirty else "")) if commit else "unknown"


def start_run(name: str, seed: int | None = None, log_file: Path | None = None) -> logging.Logger:
    """A logger for one run (stderr, plus ``log_file`` when given, appended) that has
    already recorded the command line, the git commit and the seed (``None``: the run
    has no randomness, and says so)."""
    log = logging.getLogger(name)
    log.setLevel(logging.INFO)
    log.handlers.clear()
    log.propagate = False
    fmt = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S")
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    for h in handlers:
        h.setFormatter(fmt)
        log.addHandler(h)
    RUN_LOGS[:] = [log]
    log.info("command: %s", shlex.join([sys.executable] + sys.argv))
    log.info("git commit: %s", git_commit())
    log.info("seed: %s", "none (deterministic)" if seed is None else seed)
    return log
