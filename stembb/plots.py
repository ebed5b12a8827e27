"""Matplotlib helpers: headless backend, atomic PNG writes."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from stembb.io import atomic_path  # noqa: E402


def save_figure(fig, path: Path) -> None:
    """Save ``fig`` as PNG at ``path`` atomically and close it."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
