"""Benchmark: ingest + preprocess of the shared MNIST tarball vs a naive single-process Pillow loop, and
the project at 10x the data (time against linear, peak memory against the output).

    python benchmarks/ingest.py [--tarball ../shared/data/mnist_png.tar.gz] [--repeats 3]
                                [--scale10-repeats 1] [--no-scale10]

Every measurement runs in a fresh subprocess (no warm caches or imports carried between them; the
archive itself is in the page cache after the first read, for both sides alike), timed inside it
around the work only. Project and naive loop alternate, `--repeats` times each: median and spread.
The project side is the real pipeline work (safe tar reading, decoding, hashing, validation, versioned
dataset, stratified split, baseline statistics, all files written); the baseline only decodes.

Scale: a 10x archive (every image ten times: copy 0 as is, copies 1-9 with two pixels changed, so every
image is distinct) is built once into the cache folder (`MNIST_MLOPS_CACHE`, default
~/.cache/mnist-mlops), keyed by the source's sha256. `scale10_seconds_ratio` is its time over ten times
the 1x median of the same run; `scale10_peak_rss_mb` is the peak of the summed resident memory of the
whole process tree (the ingest process and its decode workers, sampled every 10 ms; shared pages count
once per process, so this overstates), against `scale10_output_mb`, the arrays ingest writes; the
process's own peak and the largest worker's are reported beside it.
The last line printed is the JSON summary.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from common import DEFAULT_TARBALL, spread, tree_memory_mb
from PIL import Image

from mnist_mlops.components.ingest.executor import run_ingest
from mnist_mlops.components.preprocess.executor import run_preprocess
from mnist_mlops.hashing import sha256_file
from mnist_mlops.sources import cache_dir

SCALE = 10
SCALE_VERSION = 1
"""Part of the 10x archive's cache key: bump it when `build_scaled` changes what it writes."""
_SAMPLE_SECONDS = 0.01
_MIB = 1 << 20


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


def build_scaled(source: Path, target: Path) -> None:
    """`SCALE` copies of every member of `source` (named `c<k>_<name>`); copies 1 and up get pixel (0, 0)
    set to 25k + 1 and the last pixel shifted by k, re-encoded with Pillow: every image distinct.
    Members are written copy by copy, so the archive is not in path order (ingest's re-ordering runs)."""
    with tarfile.open(source, "r:gz") as archive:
        members = [(member, archive.extractfile(member).read()) for member in archive if member.isfile()]
    staged = target.with_name(f".{target.name}.partial")
    with tarfile.open(staged, "w:gz", compresslevel=6) as scaled:
        for copy in range(SCALE):
            for member, data in members:
                if copy:
                    image = np.array(Image.open(io.BytesIO(data)).convert("L"))
                    image[0, 0] = copy * 25 + 1
                    image[-1, -1] = (int(image[-1, -1]) + copy) % 256
                    encoded = io.BytesIO()
                    Image.fromarray(image).save(encoded, format="PNG")
                    data = encoded.getvalue()
                folder, _, name = member.name.rpartition("/")
                info = tarfile.TarInfo(f"{folder}/c{copy}_{name}")
                info.size, info.mtime, info.mode = len(data), member.mtime, 0o644
                scaled.addfile(info, io.BytesIO(data))
    os.replace(staged, target)


def scaled_tarball(source: Path) -> Path:
    """The 10x archive of `source`, built on first use into the cache folder."""
    target = cache_dir() / "benchmarks" / f"scale{SCALE}-v{SCALE_VERSION}-{sha256_file(source)}.tar.gz"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        print(f"building the {SCALE}x archive {target} (once; minutes)", flush=True)
        build_scaled(source, target)
    return target


def measure(side: str, tarball: Path) -> dict:
    """One measurement in this (fresh) process: printed as one JSON line for the parent."""
    with tempfile.TemporaryDirectory() as workdir:
        started = time.perf_counter()
        if side == "naive":
            images, _ = naive_pillow_loop(tarball)
            seconds = time.perf_counter() - started
            return {"seconds": seconds, "images": len(images), "fingerprint": fingerprint(images)}
        count = project(tarball, Path(workdir))
        seconds = time.perf_counter() - started
        dataset = Path(workdir) / "dataset"
        output = sum(path.stat().st_size for path in dataset.rglob("*.npy"))
        result = {
            "seconds": seconds,
            "images": count,
            "output_mb": output / _MIB,
            "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        }
        if count <= 100_000:  # the 10x set is not loaded whole just to compare
            images = [np.load(dataset / split / "images.npy") for split in ("training", "testing")]
            result["fingerprint"] = fingerprint(np.concatenate(images))
        return result


def run_measurement(side: str, tarball: Path) -> dict:
    """`measure` in a fresh subprocess, with the peak resident memory of its process tree."""
    command = [sys.executable, __file__, "--measure", side, "--tarball", str(tarball)]
    env = os.environ | {"MNIST_MLOPS_TRACKING": "off"}
    with subprocess.Popen(command, stdout=subprocess.PIPE, env=env, text=True) as child:
        peak = 0
        while child.poll() is None:
            peak = max(peak, tree_memory_mb(child.pid))
            time.sleep(_SAMPLE_SECONDS)
        output = child.stdout.read()
    if child.returncode:
        raise SystemExit(f"{side} measurement failed (exit {child.returncode})")
    return json.loads(output.strip().splitlines()[-1]) | {"peak_rss_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tarball", type=Path, default=DEFAULT_TARBALL)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale10-repeats", type=int, default=1)
    parser.add_argument("--no-scale10", action="store_true", help="skip the 10x measurement")
    parser.add_argument("--measure", choices=["project", "naive"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.tarball)))
        return

    scaled = None if args.no_scale10 else scaled_tarball(args.tarball)
    project_runs, naive_runs, scaled_runs = [], [], []
    for repeat in range(args.repeats):
        project_runs.append(run_measurement("project", args.tarball))
        naive_runs.append(run_measurement("naive", args.tarball))
        project_seconds, naive_seconds = project_runs[-1]["seconds"], naive_runs[-1]["seconds"]
        line = f"repeat {repeat + 1}: project {project_seconds:.2f}s, naive {naive_seconds:.2f}s"
        if scaled is not None and repeat < args.scale10_repeats:
            scaled_runs.append(run_measurement("project", scaled))
            scaled_seconds, scaled_peak = scaled_runs[-1]["seconds"], scaled_runs[-1]["peak_rss_mb"]
            line += f", project at {SCALE}x {scaled_seconds:.2f}s ({scaled_peak:.0f} MB peak)"
        print(line, flush=True)

    seconds = statistics.median(run["seconds"] for run in project_runs)
    naive_seconds = statistics.median(run["seconds"] for run in naive_runs)
    count, naive_count = project_runs[0]["images"], naive_runs[0]["images"]
    summary = {
        "images": count,
        "seconds": round(seconds, 3),
        "seconds_spread": spread([run["seconds"] for run in project_runs]),
        "baseline_seconds": round(naive_seconds, 3),
        "baseline_seconds_spread": spread([run["seconds"] for run in naive_runs]),
        "images_per_s": round(count / seconds),
        "baseline_images_per_s": round(naive_count / naive_seconds),
        "ratio": round(naive_seconds / seconds * count / naive_count, 2),
        "identical_pixels": project_runs[0]["fingerprint"] == naive_runs[0]["fingerprint"],
        "peak_rss_mb": round(max(run["peak_rss_mb"] for run in project_runs)),
        "repeats": args.repeats,
    }
    if scaled_runs:
        scaled_seconds = statistics.median(run["seconds"] for run in scaled_runs)
        summary |= {
            "scale10_images": scaled_runs[0]["images"],
            "scale10_seconds": round(scaled_seconds, 3),
            "scale10_seconds_spread": spread([run["seconds"] for run in scaled_runs]),
            "scale10_seconds_ratio": round(scaled_seconds / (SCALE * seconds), 3),
            "scale10_peak_rss_mb": round(max(run["peak_rss_mb"] for run in scaled_runs)),
            "scale10_peak_rss_scope": "process tree: ingest + preprocess process and its decode workers",
            "scale10_process_peak_rss_mb": round(max(run["process_peak_rss_mb"] for run in scaled_runs)),
            "scale10_worker_peak_rss_mb": round(max(run["worker_peak_rss_mb"] for run in scaled_runs)),
            "scale10_output_mb": round(scaled_runs[0]["output_mb"]),
            "scale10_repeats": len(scaled_runs),
        }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
