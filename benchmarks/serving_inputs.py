"""What the serving benchmarks share: MNIST test PNGs from the shared tarball, a registered model, and
the scoring server's resident memory."""

from __future__ import annotations

import argparse
import tarfile
from pathlib import Path

import numpy as np

DEFAULT_TARBALL = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist_png.tar.gz"


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


def resident_mb(root_pid: int, measure: str = "Rss") -> float:
    """Memory of a process and its children (the gunicorn master and its workers), from /proc:
    "Rss" counts pages the processes share (libraries, the forked master's) once per process, "Pss"
    splits them between the sharers, so its sum is what the server takes."""
    pids = [root_pid]
    children = Path(f"/proc/{root_pid}/task/{root_pid}/children")
    if children.exists():
        pids += [int(pid) for pid in children.read_text().split()]
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(f"{measure}:"):
                total += int(line.split()[1])
    return total / 1024
