"""Benchmark: ingest + preprocess of the shared MNIST tarball vs a naive single-process Pillow loop.

    python benchmarks/ingest.py [--tarball ../shared/data/mnist_png.tar.gz] [--repeats 3]

Both sides read the same .tar.gz in the same run; each is timed `--repeats` times and the median is
reported. The project side is the real pipeline work (safe tar reading, decoding, hashing, validation,
versioned dataset, stratified split, baseline statistics, all files written); the baseline only
decodes. The last line printed is the JSON summary.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from mnist_mlops.components.ingest.executor import run_ingest
from mnist_mlops.components.preprocess.executor import run_preprocess

DEFAULT_TARBALL = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist_png.tar.gz"


def naive_pillow_loop(tarball: Path) -> tuple[np.ndarray, np.ndarray]:
    """What a notebook would do: walk the archive, open each PNG with Pillow, stack the arrays."""
    images, labels = [], []
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive:
            if member.isfile() and member.name.endswith(".png"):
                data = archive.extractfile(member).read()
                images.append(np.asarray(Image.open(io.BytesIO(data)).convert("L")))
                labels.append(int(member.name.split("/")[-2]))
    return np.stack(images), np.asarray(labels, dtype=np.uint8)


def project(tarball: Path, workdir: Path) -> int:
    manifest = run_ingest(str(tarball), workdir / "dataset", workdir / "data_report.json")
    run_preprocess(workdir / "dataset", workdir / "preprocessed")
    return sum(split["count"] for split in manifest["splits"].values())


def fingerprint(images: np.ndarray) -> str:
    """Order-independent hash of a set of images, to check both sides decoded the same pixels."""
    rows = sorted(hashlib.sha256(image.tobytes()).digest() for image in images)
    return hashlib.sha256(b"".join(rows)).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tarball", type=Path, default=DEFAULT_TARBALL)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    project_times, baseline_times = [], []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as workdir:
            started = time.perf_counter()
            count = project(args.tarball, Path(workdir))
            project_times.append(time.perf_counter() - started)
            ours = np.concatenate(
                [np.load(Path(workdir) / "dataset" / s / "images.npy") for s in ("training", "testing")]
            )
        started = time.perf_counter()
        baseline_images, _ = naive_pillow_loop(args.tarball)
        baseline_times.append(time.perf_counter() - started)
        print(
            f"repeat {repeat + 1}: project {project_times[-1]:.2f}s, baseline {baseline_times[-1]:.2f}s",
            flush=True,
        )
    same_pixels = fingerprint(ours) == fingerprint(baseline_images)
    seconds, baseline_seconds = statistics.median(project_times), statistics.median(baseline_times)
    print(
        json.dumps(
            {
                "images": count,
                "seconds": round(seconds, 3),
                "images_per_s": round(count / seconds),
                "baseline_images_per_s": round(len(baseline_images) / baseline_seconds),
                "ratio": round(baseline_seconds / seconds * count / len(baseline_images), 2),
                "identical_pixels": same_pixels,
                "repeats": args.repeats,
            }
        )
    )


if __name__ == "__main__":
    main()
