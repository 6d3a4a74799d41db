"""ingest: bring a dataset from its source to a versioned, validated, content-hashed dataset folder.

Framework-free: plain paths and scalars in, files out. The AML/KFP component wrappers, the CLI and the
tests all call `run_ingest`.

Output folder (`dataset`):
    manifest.json                  dataset_manifest schema; `dataset_version` is the content hash, and
                                   `image_shape` and `classes` say what the arrays hold
    training/{images,labels,digests}.npy
    testing/{images,labels,digests}.npy
and `data_report.json` (data_report schema) beside it or wherever the caller asks.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mnist_mlops import __version__, contracts, tracking
from mnist_mlops.artifacts import file_name
from mnist_mlops.atomic import staged_dir
from mnist_mlops.data_assets import check_registrable, register_dataset
from mnist_mlops.dataset import MNIST_CLASSES, MNIST_IMAGE_SHAPE, describe_shape
from mnist_mlops.errors import UserInputError
from mnist_mlops.hashing import labelled_set_digest
from mnist_mlops.ports import checked
from mnist_mlops.progress import Progress
from mnist_mlops.provenance import utc_iso
from mnist_mlops.sources import iter_files, open_source, read_files

from .layouts import SPLITS, LoadedDataset, load_layout, parse_classes
from .streaming import stream_png_folders
from .validation import (
    MAX_LISTED_INVALID,
    Policy,
    data_checks,
    leakage_count,
    overall_outcome,
    reference_checks,
    split_statistics,
)

COMPONENT_NAME = "mnist_mlops_ingest"
DATASET_PORT = "dataset"
"""The output port the dataset is written to: what a registered data asset points at in the job."""
LARGE_SOURCE_FILES = 10_000
"""A source of at least this many files reports each of ingest's `STEPS` as progress (MNIST's 70,000
files: eight seconds on two cores, more for larger sources); a small one is done before a report is read."""
STEPS = ("read", "decoded", "checked", "written")


class DataValidationError(UserInputError):
    """The data failed a check whose policy is `fail`; nothing was written."""


@checked("ingest")
def run_ingest(
    source_uri: str | None,
    dataset: str | Path,
    data_report: str | Path,
    *,
    source_data: str | Path | None = None,
    source_sha256: str | None = None,
    reference_report: str | Path | None = None,
    classes: str | None = None,
    on_mixed_shape: str = "fail",
    max_age_days: int = 365,
    on_stale: str = "warn",
    on_invalid: str = "fail",
    max_invalid_fraction: float = 0.001,
    max_prior_shift: float = 0.05,
    max_stat_shift: float = 0.1,
    asset_name: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Ingest exactly one of `source_uri` (a path or URI) and `source_data` (a mounted folder) into
    `dataset` and write the validation report `data_report`; returns the manifest.

    `source_uri` comes first (None when `source_data` is given) so that positional calls such as
    `run_ingest("mnist.tar.gz", dataset, data_report)` keep working. Raises DataValidationError (exit 2
    at the CLI) when a check fails, after writing nothing. `classes` declares the class names in label
    order (comma-separated); by default they are the training split's class folders, sorted. With
    `asset_name`, inside an Azure ML job, the written dataset is registered as that data asset, versioned
    by its content (`mnist_mlops.data_assets`), before the report that names it is written.
    """
    if (source_data is None) == (source_uri is None):
        given = "both" if source_data is not None else "neither"
        raise UserInputError(
            f"ingest: give exactly one of source_data (a folder port) or source_uri (a URI), not {given}"
        )
    if asset_name is not None:
        check_registrable(asset_name)
    source = source_uri if source_data is None else str(source_data)
    policy = Policy(
        max_age_days,
        on_stale,
        on_invalid,
        max_invalid_fraction,
        max_prior_shift,
        max_stat_shift,
        on_mixed_shape,
    )
    declared = parse_classes(classes)
    reference = contracts.read_json(reference_report, "data_report") if reference_report else None
    now = now or datetime.now(UTC)
    with staged_dir(Path(dataset)) as stage:
        with open_source(source, sha256=source_sha256) as local:
            layout = _load(local.path, local.uri, stage, declared, on_mixed_shape)
        step_done = _step_progress(layout.source_files)
        step_done("read")
        step_done("decoded")

        stats = {
            name: split_statistics(
                layout.image_shape,
                split.labels,
                split.digests,
                split.class_histograms,
                layout.classes,
                converted=split.converted,
                resized=split.resized,
            )
            for name, split in layout.splits.items()
        }
        newest = datetime.fromtimestamp(layout.newest_mtime, UTC)
        checks = data_checks(
            stats,
            invalid=layout.invalid,
            odd_shapes=layout.odd_shapes,
            candidates=layout.candidates,
            leakage=leakage_count(layout.splits["training"].digests, layout.splits["testing"].digests),
            newest_source_time=newest,
            now=now,
            policy=policy,
        )
        if reference:
            checks += reference_checks(stats, reference, policy)
        step_done("checked")
        version = _dataset_version(layout)
        report = {
            "schema_version": 1,
            "dataset_version": version,
            "generated_at": utc_iso(now),
            "source_uri": local.uri,
            "source_format": layout.format,
            "splits": stats,
            "invalid_files": layout.invalid[:MAX_LISTED_INVALID],
            "invalid_count": len(layout.invalid),
            "ignored_files": layout.ignored_files,
            "newest_source_time": utc_iso(newest),
            "reference_dataset_version": reference["dataset_version"] if reference else None,
            "policy": vars(policy),
            "checks": checks,
            "outcome": overall_outcome(checks),
        }
        invalid_fraction = len(layout.invalid) / layout.candidates if layout.candidates else 0.0
        failed = [item for item in checks if item["outcome"] == "fail"]
        if failed:  # raised inside the stage: nothing staged survives
            reasons = "; ".join(f"{item['name']}: {item['reason']}" for item in failed)
            examples = "; ".join(f"{item['path']}: {item['reason']}" for item in layout.invalid[:5])
            with tracking.node_run("ingest") as run:
                _log_report(run, report, invalid_fraction)  # so the run shows why the data was refused
                raise DataValidationError(
                    f"data validation failed for {local.uri}: {reasons}"
                    + (f" (e.g. {examples})" if examples else "")
                )
        for item in checks:
            if item["outcome"] == "warn":
                print(f"warning: {item['name']}: {item['reason']}", file=sys.stderr)

        manifest = {
            "schema_version": 1,
            "dataset_version": version,
            "source_uri": local.uri,
            "source_kind": local.kind,
            "source_format": layout.format,
            "fetched_at": utc_iso(now),
            "newest_source_time": utc_iso(newest),
            "image_shape": list(layout.image_shape),
            "classes": layout.classes,
            "splits": {
                name: {
                    "count": len(split.labels),
                    "class_counts": stats[name]["class_counts"],
                    "files": split.files,
                }
                for name, split in layout.splits.items()
            },
            "producer": {"component": COMPONENT_NAME, "version": __version__},
        }
        contracts.validate(report, "data_report", source=str(data_report))
        contracts.write_json(stage / "manifest.json", manifest, "dataset_manifest")
        # registered before the dataset is committed: a refused registration leaves no output behind
        report["data_asset"] = register_dataset(asset_name, manifest, DATASET_PORT) if asset_name else None
    contracts.write_json(data_report, report, "data_report")
    with tracking.node_run("ingest") as run:
        _log_report(run, report, invalid_fraction)
        run.artifact(data_report, name=file_name("ingest", "data_report"))  # the platform names it
    step_done("written")
    return manifest


def _load(path: Path, uri: str, stage: Path, classes: list[str] | None, on_mixed_shape: str) -> LoadedDataset:
    """The source decoded into `stage`: streamed when it is image folders of one shape (MNIST's case),
    else (IDX files, mixed shapes, or a source to refuse) read whole and decoded in memory."""
    streamed = stream_png_folders(iter_files(path), stage, classes=classes)
    if streamed is not None:
        return streamed
    return load_layout(read_files(path), uri, stage, classes=classes, on_mixed_shape=on_mixed_shape)


def _step_progress(files: int) -> Callable[[str], None]:
    """Reports a step of `STEPS` as done, on a source of `LARGE_SOURCE_FILES` or more; else nothing."""
    if files < LARGE_SOURCE_FILES:
        return lambda step: None
    progress = Progress(len(STEPS), "step", eta=False)
    return lambda step: progress.update(STEPS.index(step) + 1, **{step: f"{files} files"})


def _log_report(run: tracking.NodeRun, report: dict[str, Any], invalid_fraction: float) -> None:
    """The dataset as the node's MLflow input, the data report's figures as metrics (each check's number
    as `check.<name>`) and its verdict as tags."""
    splits = report["splits"]
    counts = {f"{name}_count": stats["count"] for name, stats in splits.items()}
    run.dataset(
        report["source_uri"],
        report["dataset_version"],
        "source",
        {
            "image_shape": describe_shape(splits["training"]["image_shape"]),
            "class_count": len(splits["training"]["classes"]),
            **counts,
        },
    )
    run.params(report["policy"] | {"source_format": report["source_format"]})
    pixels = {
        f"{name}_{key}": stats[key]
        for name, stats in splits.items()
        for key in ("pixel_mean", "pixel_std", "ink_fraction")
    }
    check_values = {
        f"check.{item['name']}": item["value"]
        for item in report["checks"]
        if isinstance(item["value"], int | float) and not isinstance(item["value"], bool)
    }
    invalid = {"invalid_count": report["invalid_count"], "invalid_fraction": invalid_fraction}
    run.metrics(counts | pixels | check_values | invalid)
    run.tags(
        {"dataset_version": report["dataset_version"], "validation_outcome": report["outcome"]}
        | {f"check.{item['name']}": item["outcome"] for item in report["checks"]}
    )


def _dataset_version(layout: LoadedDataset) -> str:
    """Content hash of every (image, label) pair per split: the same content always has one version.

    The image shape and class names are content too (the same pixels and label numbers mean other
    data with other names); they join the hash when they are not MNIST's, so MNIST keeps its versions.
    """
    whole = hashlib.sha256()
    for name in SPLITS:
        split = layout.splits[name]
        whole.update(name.encode())
        whole.update(labelled_set_digest(split.digests, split.labels).digest())
    if (layout.image_shape, tuple(layout.classes)) != (MNIST_IMAGE_SHAPE, MNIST_CLASSES):
        whole.update(json.dumps({"image_shape": layout.image_shape, "classes": layout.classes}).encode())
    return whole.hexdigest()
