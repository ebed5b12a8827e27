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


def plot_history(history: list[dict], panels: list[tuple[str, str]], path: Path, ncols: int = 4) -> None:
    """Metric curves over epochs, one panel per ``(column, title)``, one line per split."""
    import pandas as pd

    df = pd.DataFrame(history)
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3.5 * nrows), squeeze=False)
    for ax, (col, title) in zip(axes.ravel(), panels):
        if col not in df.columns:  # e.g. a validation-only metric in a run without validation
            ax.axis("off")
            continue
        for split, grp in df[df[col].notna()].groupby("split"):
            ax.plot(grp["epoch"], grp[col], marker="o", ms=3, label=split)
        ax.set(title=title, xlabel="epoch")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    save_figure(fig, path)
