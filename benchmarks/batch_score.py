"""Benchmark: the batch_score executor vs a naive scoring loop, on the 10,000 MNIST test PNGs.

    python benchmarks/batch_score.py [--registry URI] [--model models:/mnist-mlops@production] [--workers 1]

Needs a registry with a model trained on the shared MNIST (`mnist-mlops run` then `mnist-mlops deploy`
make one in ./mlflow.db). The test PNGs (testing/<digit>/*.png of the shared tarball) are first copied
into a tarball of their own (not timed). Both sides then go from that tarball to a predictions CSV:
- ours: `run_batch_score` end to end (read the tarball, decode, predict, checkpoint, write CSV and
  summary), best of `--rounds`; its figures exclude the one-off model load, reported apart for the
  first (cold) round with that round's whole wall time, TensorFlow import included;
- baseline: a naive loop over `tarfile` members, Pillow decoding each file and `model.predict` of the
  MLflow pyfunc model per mini-batch of 32, then `csv` (the model load is excluded likewise).
The last line printed is the JSON summary.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving_inputs import DEFAULT_TARBALL

from mnist_mlops.archives import read_tar_gz
from mnist_mlops.components.batch_score.executor import COLUMNS, expected_classes, run_batch_score
from mnist_mlops.dataset import MNIST_CLASSES, MNIST_IMAGE_SHAPE
from mnist_mlops.model_interface import MNIST
from mnist_mlops.registry import registry_uri
from mnist_mlops.serving.scorer import RegistryModels

BASELINE_BATCH = 32


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--registry", help="MLflow registry URI (default ./mlflow.db, as `mnist-mlops run` made it)"
    )
    parser.add_argument("--model", default="models:/mnist-mlops@production", help="registry reference")
    parser.add_argument("--tarball", type=Path, default=DEFAULT_TARBALL, help="the shared MNIST PNG tarball")
    parser.add_argument("--workers", type=int, default=1, help="batch_score workers")
    parser.add_argument("--mini-batch-size", type=int, default=2048, help="batch_score mini_batch_size")
    parser.add_argument("--rounds", type=int, default=3, help="runs of ours; the best is reported")
    return parser.parse_args()


def test_tarball(shared: Path, target: Path) -> int:
    """The testing/<digit>/*.png members of the shared tarball in a tarball of their own."""
    entries = [entry for entry in read_tar_gz(shared) if "testing" in Path(entry.path).parts]
    with tarfile.open(target, "w:gz") as archive:
        for entry in entries:
            info = tarfile.TarInfo(entry.path)
            info.size, info.mtime = len(entry.data), int(entry.mtime)
            archive.addfile(info, io.BytesIO(entry.data))
    return len(entries)


def baseline(tarball: Path, model_uri: str, uri: str, target: Path) -> tuple[float, list[int]]:
    """The naive loop; returns its seconds (model load excluded) and its predicted classes."""
    import mlflow.pyfunc

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    model = mlflow.pyfunc.load_model(model_uri)
    model.predict(np.zeros((BASELINE_BATCH, *MNIST_IMAGE_SHAPE), np.uint8))  # warm up, as ours is warmed
    started = time.perf_counter()
    rows, paths, pixels = [], [], []

    def flush() -> None:
        probabilities = np.asarray(model.predict(np.stack(pixels)))
        for path, row in zip(paths, probabilities, strict=True):
            predicted = int(row.argmax())
            rows.append((path, predicted, MNIST_CLASSES[predicted], f"{row.max():.6f}"))
        paths.clear()
        pixels.clear()

    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive:
            if not member.isfile():
                continue
            try:
                with Image.open(archive.extractfile(member)) as image:
                    pixels.append(np.asarray(image.convert("L"), dtype=np.uint8))
            except OSError:
                continue
            paths.append(member.name)
            if len(pixels) == BASELINE_BATCH:
                flush()
    if pixels:
        flush()
    rows.sort()
    expected = expected_classes([row[0] for row in rows], MNIST, "auto", str(tarball))
    truths = ["" if index is None else MNIST_CLASSES[index] for index in expected]
    with open(target, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows((*row, truth) for row, truth in zip(rows, truths, strict=True))
    return time.perf_counter() - started, [row[1] for row in rows]


def main() -> None:
    args = arguments()
    uri = registry_uri(args.registry)
    with tempfile.TemporaryDirectory(prefix="batch-score-benchmark-") as folder:
        work = Path(folder)
        tarball = work / "mnist_test_png.tar.gz"
        images = test_tarball(args.tarball, tarball)
        runs = []
        for round_number in range(args.rounds):
            predictions = work / f"ours-{round_number}" / "predictions.csv"
            started = time.perf_counter()
            summary = run_batch_score(
                args.model,
                tarball,
                predictions,
                predictions.with_name("summary.json"),
                registry=uri,
                mini_batch_size=args.mini_batch_size,
                workers=args.workers,
            )
            runs.append((summary["seconds"], time.perf_counter() - started, summary, predictions))
        seconds, _, summary, predictions = min(runs, key=lambda run: run[0])
        version_uri = f"models:/{RegistryModels(args.model, uri).name}/{summary['model_version']}"
        # Keras prints a progress bar per predict call: writing it to a terminal is not what we measure.
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
            baseline_seconds, baseline_classes = baseline(tarball, version_uri, uri, work / "baseline.csv")
        with open(predictions, newline="") as handle:
            ours_classes = [int(row["class"]) for row in csv.DictReader(handle)]
        agreement = np.mean(np.array(ours_classes) == np.array(baseline_classes))
    print(
        json.dumps(
            {
                "model": version_uri,
                "workers": args.workers,
                "mini_batch_size": args.mini_batch_size,
                "rounds_seconds": [round(run[0], 3) for run in runs],
                "cold_model_load_seconds": runs[0][2]["model_load_seconds"],
                "cold_wall_seconds": round(runs[0][1], 3),
                "baseline_seconds": round(baseline_seconds, 3),
                "classes_agree_with_baseline": round(float(agreement), 6),
                "images": images,
                "seconds": round(seconds, 3),
                "images_per_s": round(images / seconds),
                "baseline_images_per_s": round(images / baseline_seconds),
                "ratio": round(baseline_seconds / seconds, 2),
                "accuracy": summary["accuracy"],
            }
        )
    )


if __name__ == "__main__":
    main()
