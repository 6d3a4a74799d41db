"""What the serving benchmarks share: their arguments and MNIST test PNGs from the shared tarball."""

from __future__ import annotations

import argparse
import tarfile
from pathlib import Path

import numpy as np
from common import DEFAULT_TARBALL


def arguments(description: str, *, each: bool = False) -> argparse.Namespace:
    parser = argument_parser(description)
    if each:
        parser.add_argument("--each", type=int, default=1000, help="requests of every malformed kind")
    return parser.parse_args()


def argument_parser(description: str) -> argparse.ArgumentParser:
    """The options every serving benchmark takes (registry, model, test PNGs); add your own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--registry", help="MLflow registry URI (default ./mlflow.db, as `mnist-mlops run` made it)"
    )
    parser.add_argument(
        "--model", default="models:/mnist-mlops@production", help="registry reference to serve"
    )
    parser.add_argument(
        "--tarball", type=Path, default=DEFAULT_TARBALL, help="MNIST PNG tarball (test images)"
    )
    parser.add_argument("--images", type=int, default=2560, help="test PNGs to use")
    return parser


def test_pngs(tarball: Path, count: int) -> tuple[list[bytes], list[int]]:
    """`count` PNG files of the testing folders (a seeded sample of all digits), as clients send them."""
    blobs, labels = [], []
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive:
            parts = Path(member.name).parts
            if member.isfile() and member.name.endswith(".png") and "testing" in parts:
                blobs.append(archive.extractfile(member).read())
                labels.append(int(parts[-2]))
            elif blobs and "testing" not in parts:
                break
    if len(blobs) < count:
        raise SystemExit(f"{tarball}: only {len(blobs)} test PNGs found, wanted {count}")
    chosen = np.random.default_rng(0).choice(len(blobs), count, replace=False)
    return [blobs[i] for i in chosen], [labels[i] for i in chosen]
