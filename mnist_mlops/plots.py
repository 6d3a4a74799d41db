"""PNG figures for people: training curves, confusion matrices, image grids (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mnist_mlops.atomic import atomic_write_bytes


def _figure_bytes(figure: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def training_curves(history: list[dict[str, float]], target: Path) -> None:
    """Loss and accuracy per epoch, train against validation."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    epochs = [row["epoch"] for row in history]
    figure = Figure(figsize=(10, 4))
    for axis, key, title in zip(
        figure.subplots(1, 2), ("loss", "accuracy"), ("Loss", "Accuracy"), strict=True
    ):
        axis.plot(epochs, [row[key] for row in history], marker="o", label="train")
        axis.plot(epochs, [row[f"val_{key}"] for row in history], marker="o", label="validation")
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    atomic_write_bytes(Path(target), _figure_bytes(figure))
