"""PNG figures for people: training curves, confusion matrices, image grids (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mnist_mlops.atomic import atomic_write_bytes

BASE_CLASSES = 10
"""The class count the confusion matrix's base size fits (MNIST's figure)."""


def figure_bytes(figure: Any) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def training_curves(history: list[dict[str, float]], target: Path) -> None:
    """Loss and accuracy per epoch, train against validation."""
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
    atomic_write_bytes(Path(target), figure_bytes(figure))


def confusion_matrix(matrix: Any, target: Path, class_names: list[str] | tuple[str, ...]) -> None:
    """Counts per (true, predicted) class with the numbers written in each cell, the axes labelled with
    the class names. Ten classes fill the base size; more classes grow the figure so cells stay legible,
    and names longer than two characters are slanted so neighbours do not overlap."""
    from matplotlib.figure import Figure

    scale = max(1.0, len(class_names) / BASE_CLASSES)
    figure = Figure(figsize=(6 * scale, 5.5 * scale))
    axis = figure.subplots()
    shown = axis.imshow(matrix, cmap="Blues")
    figure.colorbar(shown, ax=axis)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    slanted = max(len(name) for name in class_names) > 2
    axis.set_xticks(
        range(len(class_names)),
        class_names,
        rotation=45 if slanted else 0,
        ha="right" if slanted else "center",
    )
    axis.set_yticks(range(len(class_names)), class_names)
    threshold = matrix.max() / 2 if matrix.size else 0
    for row in range(len(matrix)):
        for column in range(len(matrix)):
            color = "white" if matrix[row, column] > threshold else "black"
            axis.text(
                column, row, int(matrix[row, column]), ha="center", va="center", fontsize=7, color=color
            )
    axis.set_title("Confusion matrix")
    atomic_write_bytes(Path(target), figure_bytes(figure))


def image_grid(images: Any, captions: list[str], target: Path, columns: int = 5) -> None:
    """Images with a caption each (e.g. the worst misclassifications); a note when there are none.
    Grayscale (N, H, W) images are drawn on a fixed 0-255 gray scale, colour (N, H, W, 3) as they are."""
    from matplotlib.figure import Figure

    rows = max(1, -(-len(images) // columns))
    figure = Figure(figsize=(columns * 2, rows * 2.2))
    axes = figure.subplots(rows, columns, squeeze=False)
    for index, axis in enumerate(axes.ravel()):
        axis.axis("off")
        if index < len(images):
            axis.imshow(images[index], cmap="gray", vmin=0, vmax=255)
            axis.set_title(captions[index], fontsize=7)
    if not len(images):
        axes[0, 0].text(0, 0.5, "no misclassified images", fontsize=10)
    atomic_write_bytes(Path(target), figure_bytes(figure))
