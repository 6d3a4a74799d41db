"""Benchmark: the batch_score executor vs a naive scoring loop on the 10,000 MNIST test PNGs, at 10x, and
in 1 and 2 worker processes of one CPU each.

    python benchmarks/batch_score.py [--registry URI] [--model models:/mnist-mlops@production] [--rounds 3]

Needs a registry with a model trained on the shared MNIST (`mnist-mlops run` then `mnist-mlops deploy`
make one in ./mlflow.db). The test PNGs (testing/<digit>/*.png of the shared tarball) are first copied
into a tarball of their own, and ten times over (copy k's pixels differ from the others': its top-left
pixel XOR k, re-encoded) into a second one (not timed). One cold run of ours comes first (its model
load and wall time reported apart, not counted), then every round, interleaved:
- ours: `run_batch_score` in a process of its own, end to end (read the tarball, decode, predict,
  checkpoint, write CSV and summary), on the test PNGs and on the 10x tarball; its images/s exclude the
  one-off model load (the summary's `model_load_seconds`); the 10x run's peak resident memory is the
  scoring process's own (its VmHWM; with workers, the parent's: workers=1 is the default);
- baseline: a naive loop over `tarfile` members, Pillow decoding each file and `model.predict` of the
  MLflow pyfunc model per mini-batch of 32, then `csv` (the model load is excluded likewise);
- workers: ours on the 10x tarball in one process kept to one CPU (`workers=1`), and with `workers=2`
  (each worker kept to a CPU of its own by the executor, as an Azure ML parallel job gives each process
  its share of a node); `workers_scaling` is the second's images/s over the first's (the time until
  the first worker is ready excluded) and `parity` the fraction of the two-worker run's predictions
  (whole CSV rows: path, class, label, confidence, expected) equal to the one-process run's.
Figures are medians over the rounds with their [min, max]. Baseline parity: ours and the baseline
predict the same class for every test PNG, and their confidences (6 decimals) differ by at most 1e-5.
The last line printed is the JSON summary.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEFAULT_TARBALL, spread

from mnist_mlops.archives import read_tar_gz
from mnist_mlops.components.batch_score.executor import COLUMNS, expected_classes
from mnist_mlops.dataset import MNIST_CLASSES, MNIST_IMAGE_SHAPE
from mnist_mlops.model_interface import MNIST
from mnist_mlops.registry import registry_uri
from mnist_mlops.serving.scorer import RegistryModels

BASELINE_BATCH = 32
SCALE = 10
CONFIDENCE_TOLERANCE = 1e-5
SCORING_WORKERS = 2
SCORE_IN_CHILD = """
import os, sys
from mnist_mlops.components.batch_score.executor import run_batch_score
model, images, predictions, summary, registry, mini_batch_size, workers, one_cpu = sys.argv[1:]
if one_cpu == "yes":
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
run_batch_score(model, images, predictions, summary, registry=registry,
                mini_batch_size=int(mini_batch_size), workers=int(workers))
with open("/proc/self/status") as status:
    print(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
"""
"""Scores in a fresh process (kept to one CPU if asked) and prints its peak resident memory in kB (VmHWM:
this process's own, not its parent's, which a forked child's ru_maxrss would include)."""


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--registry", help="MLflow registry URI (default ./mlflow.db, as `mnist-mlops run` made it)"
    )
    parser.add_argument("--model", default="models:/mnist-mlops@production", help="registry reference")
    parser.add_argument("--tarball", type=Path, default=DEFAULT_TARBALL, help="the shared MNIST PNG tarball")
    parser.add_argument("--workers", type=int, default=1, help="batch_score workers")
    parser.add_argument("--mini-batch-size", type=int, default=2048, help="batch_score mini_batch_size")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of ours (1x and 10x) and the baseline")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def test_tarballs(shared: Path, single: Path, scaled: Path) -> int:
    """The testing/<digit>/*.png members of the shared tarball in a tarball of their own (`single`),
    and SCALE times over in `scaled` (copy<k>/testing/...: copy k's top-left pixel XOR k, so no two
    copies of an image have the same pixels). Returns the number of test PNGs."""
    entries = [entry for entry in read_tar_gz(shared) if "testing" in Path(entry.path).parts]
    with tarfile.open(single, "w:gz") as archive:
        for entry in entries:
            _add(archive, entry.path, entry.data, int(entry.mtime))
    with tarfile.open(scaled, "w:gz") as archive:
        for copy in range(SCALE):
            for entry in entries:
                _add(archive, f"copy{copy}/{entry.path}", _marked(entry.data, copy), int(entry.mtime))
    return len(entries)


def _add(archive: tarfile.TarFile, path: str, data: bytes, mtime: int) -> None:
    info = tarfile.TarInfo(path)
    info.size, info.mtime = len(data), mtime
    archive.addfile(info, io.BytesIO(data))


def _marked(png: bytes, copy: int) -> bytes:
    """The PNG with its top-left pixel XOR `copy` (copy 0: unchanged)."""
    if copy == 0:
        return png
    with Image.open(io.BytesIO(png)) as image:
        pixels = np.array(image)
    pixels[0, 0] ^= copy
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def ours(
    tarball: Path,
    folder: Path,
    args: argparse.Namespace,
    uri: str,
    *,
    workers: int = 0,
    one_cpu: bool = False,
) -> dict:
    """`run_batch_score` in a process of its own (`workers`: 0 for --workers); returns its summary with
    the process's wall seconds, peak resident memory (MB) and console output."""
    command = [
        sys.executable,
        "-c",
        SCORE_IN_CHILD,
        args.model,
        str(tarball),
        str(folder / "predictions.csv"),
        str(folder / "summary.json"),
        uri,
        str(args.mini_batch_size),
        str(workers or args.workers),
        "yes" if one_cpu else "no",
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"batch_score failed ({done.returncode}):\n{done.stderr}")
    peak_kb = int(done.stdout.split()[-1])
    summary = json.loads((folder / "summary.json").read_text())
    return summary | {
        "wall_seconds": time.perf_counter() - started,
        "peak_rss_mb": peak_kb / 1024,
        "console": done.stdout,
    }


def baseline(model, tarball: Path, target: Path) -> float:
    """The naive loop over the tarball into CSV `target`; returns its seconds."""
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
    return time.perf_counter() - started


def predictions(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    classes = np.array([int(row["class"]) for row in rows])
    return [row["path"] for row in rows], classes, np.array([float(row["confidence"]) for row in rows])


def main() -> None:
    args = arguments()
    uri = registry_uri(args.registry)
    keys = ("ours", "baseline", "scale10", "scale10_rss", "one_worker", "workers", "workers_scaling")
    figures: dict[str, list[float]] = {key: [] for key in keys}
    with tempfile.TemporaryDirectory(prefix="batch-score-benchmark-") as folder:
        work = Path(folder)
        single, scaled = work / "mnist_test_png.tar.gz", work / "mnist_test_png_x10.tar.gz"
        images = test_tarballs(args.tarball, single, scaled)
        first = ours(single, _fresh(work / "cold"), args, uri)
        version_uri = f"models:/{RegistryModels(args.model, uri).name}/{first['model_version']}"
        model = _pyfunc(version_uri, uri)
        parity, runtimes = [], set()
        for round_number in range(args.rounds):
            run = ours(single, _fresh(work / f"ours-{round_number}"), args, uri)
            figures["ours"].append(run["images_per_s"])
            at_scale = ours(scaled, _fresh(work / f"scale10-{round_number}"), args, uri)
            figures["scale10"].append(at_scale["images_per_s"])
            figures["scale10_rss"].append(at_scale["peak_rss_mb"])
            # Keras prints a progress bar per predict call: writing it to a terminal is not what we measure.
            with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
                seconds = baseline(model, single, work / "baseline.csv")
            figures["baseline"].append(images / seconds)
            alone = ours(
                scaled, _fresh(work / f"one-worker-{round_number}"), args, uri, workers=1, one_cpu=True
            )
            spread_out = ours(
                scaled, _fresh(work / f"workers-{round_number}"), args, uri, workers=SCORING_WORKERS
            )
            figures["one_worker"].append(alone["images_per_s"])
            figures["workers"].append(spread_out["images_per_s"])
            figures["workers_scaling"].append(spread_out["images_per_s"] / alone["images_per_s"])
            parity.append(same_rows(work / f"one-worker-{round_number}", work / f"workers-{round_number}"))
            runtimes.update(
                re.findall(r"^worker \d+/\d+ scores with (\w+)", spread_out["console"], re.MULTILINE)
            )
            print(
                f"round {round_number + 1}: ours {run['images_per_s']:.0f} img/s, at 10x"
                f" {at_scale['images_per_s']:.0f} img/s peak {at_scale['peak_rss_mb']:.0f} MB,"
                f" baseline {images / seconds:.0f} img/s; at 10x on one CPU {alone['images_per_s']:.0f}"
                f" img/s, {SCORING_WORKERS} workers {spread_out['images_per_s']:.0f} img/s",
                file=sys.stderr,
                flush=True,
            )
        our_paths, our_classes, our_confidences = predictions(work / "ours-0" / "predictions.csv")
        base_paths, base_classes, base_confidences = predictions(work / "baseline.csv")
        if our_paths != base_paths or at_scale["scored"] != SCALE * images:
            raise SystemExit("ours and the baseline scored different files")
        agreement = float(np.mean(our_classes == base_classes))
        confidence_difference = float(np.max(np.abs(our_confidences - base_confidences)))
    ratios = [ours_rate / base for ours_rate, base in zip(figures["ours"], figures["baseline"], strict=True)]
    medians = {key: statistics.median(values) for key, values in figures.items()}
    print(
        json.dumps(
            {
                "model": version_uri,
                "workers": args.workers,
                "mini_batch_size": args.mini_batch_size,
                "rounds": args.rounds,
                "images": images,
                "scale10_images": SCALE * images,
                "cold_model_load_seconds": first["model_load_seconds"],
                "cold_wall_seconds": round(first["wall_seconds"], 3),
                "classes_agree_with_baseline": round(agreement, 6),
                "confidence_max_abs_diff_vs_baseline": round(confidence_difference, 6),
                "baseline_parity": agreement == 1.0 and confidence_difference <= CONFIDENCE_TOLERANCE,
                "accuracy": first["accuracy"],
                "scaling_workers": SCORING_WORKERS,
                "workers_runtime": sorted(runtimes),
                "one_worker_images_per_s": round(medians["one_worker"]),
                "two_workers_images_per_s": round(medians["workers"]),
                "spread": {
                    "images_per_s": spread(figures["ours"], 1),
                    "baseline_images_per_s": spread(figures["baseline"], 1),
                    "ratio": spread(ratios, 2),
                    "scale10_images_per_s": spread(figures["scale10"], 1),
                    "scale10_peak_rss_mb": spread(figures["scale10_rss"], 1),
                    "one_worker_images_per_s": spread(figures["one_worker"], 1),
                    "two_workers_images_per_s": spread(figures["workers"], 1),
                    "workers_scaling": spread(figures["workers_scaling"], 3),
                },
                "images_per_s": round(medians["ours"]),
                "baseline_images_per_s": round(medians["baseline"]),
                "ratio": round(statistics.median(ratios), 2),
                "scale10_images_per_s": round(medians["scale10"]),
                "scale10_peak_rss_mb": round(medians["scale10_rss"]),
                "workers_scaling": round(medians["workers_scaling"], 3),
                "parity": min(parity),
            }
        )
    )


def same_rows(one: Path, other: Path) -> float:
    """The fraction of rows of `one`'s predictions equal to `other`'s, row for row."""
    with open(one / "predictions.csv") as first, open(other / "predictions.csv") as second:
        rows, others = first.read().splitlines()[1:], second.read().splitlines()[1:]
    if len(rows) != len(others):
        return 0.0
    return sum(row == row_other for row, row_other in zip(rows, others, strict=True)) / len(rows)


def _fresh(folder: Path) -> Path:
    folder.mkdir()
    return folder


def _pyfunc(version_uri: str, uri: str):
    """The baseline's model: the registered MLflow pyfunc model, warmed as ours is."""
    import mlflow.pyfunc

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    model = mlflow.pyfunc.load_model(version_uri)
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        model.predict(np.zeros((BASELINE_BATCH, *MNIST_IMAGE_SHAPE), np.uint8))
    return model


if __name__ == "__main__":
    main()
