"""Run a component's spec command as a Kubeflow Pipelines task and report its output artifacts.

A KFP task learns what it produced from the executor output file named in its executor input (`{{$}}`):
KFP's own Python components write it, and kfp.local reads nothing else, so a container that only wrote
its files would hand no artifact downstream. This wrapper creates each output's parent folder (the
cluster launcher does, kfp.local does not), runs the command unchanged, and on success writes that file
listing every output artifact at its URI. The command's exit code is the task's.

`--reports` fills a component's KFP-only views (metadata.yaml's `kfp_reports`, declared as outputs by
pipelines/kfp.py) from files the command wrote, after it succeeds: a Markdown report is the file
copied; a Metrics or ClassificationMetrics report is the artifact metadata that KFP's
`Metrics.log_metric` / `ClassificationMetrics.log_confusion_matrix` would set (the KFP UI reads that),
read from a JSON file by dotted paths, and the same JSON is the artifact's body. A report that cannot
be built fails the task (exit code 2) naming the report and what is missing, and reports nothing.

    python -m mnist_mlops.kfp_executor '{{$}}' [--reports JSON] -- mldesigner execute ...
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

from mnist_mlops.atomic import atomic_write_bytes, atomic_write_text
from mnist_mlops.errors import USER_ERROR_EXIT_CODE, UserInputError

USAGE = "usage: python -m mnist_mlops.kfp_executor EXECUTOR_INPUT_JSON [--reports JSON] -- COMMAND..."
EACH = ".*."
"""In a metric's path, the step over a list's items: `per_class.*.recall` is one metric per item."""


def output_paths(executor_input: dict[str, Any]) -> dict[str, str]:
    """Each output artifact's local path, from the executor input's `outputs.artifacts`."""
    found = {}
    for name, listing in (executor_input.get("outputs", {}).get("artifacts") or {}).items():
        (artifact,) = listing["artifacts"]
        found[name] = local_path(artifact["uri"])
    return found


def local_path(uri: str) -> str:
    """The path KFP mounts an artifact URI at (gs://b/k -> /gcs/b/k, s3:// -> /s3/, minio:// -> /minio/)."""
    for scheme, mount in (("gs://", "/gcs/"), ("s3://", "/s3/"), ("minio://", "/minio/")):
        if uri.startswith(scheme):
            return mount + uri.removeprefix(scheme)
    return uri


def executor_output(
    executor_input: dict[str, Any], metadata: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The executor output listing every output artifact as the executor input named it, with the
    `metadata` given for some of them (reports) added to its own."""
    artifacts = executor_input.get("outputs", {}).get("artifacts") or {}
    return {
        "artifacts": {
            name: {
                "artifacts": [
                    {
                        "name": artifact.get("name", ""),
                        "uri": artifact["uri"],
                        "metadata": artifact.get("metadata", {}) | (metadata or {}).get(name, {}),
                    }
                ]
            }
            for name, listing in artifacts.items()
            for artifact in listing["artifacts"]
        }
    }


def lookup(document: Any, path: str) -> Any:
    """The value at a dotted path of keys (`latency.p99_ms`); None when the path meets a null on the way
    (`champion.accuracy` without a champion). A key that is not there is an error."""
    value = document
    for key in path.split("."):
        if value is None:
            return None
        if not isinstance(value, dict) or key not in value:
            raise UserInputError(f"no {path!r}: {key!r} is not there")
        value = value[key]
    return value


def metric_values(metrics: dict[str, str], document: Any) -> dict[str, float]:
    """Metric name -> number, for `metrics` (name -> path). A path through a list (`per_class.*.recall`)
    gives one metric per item, named by filling the name's `{field}`s from the item (`recall_{name}`).
    A true/false is 1/0; a null is left out; anything but a finite number is an error."""
    found: list[tuple[str, Any]] = []
    for name, path in metrics.items():
        if EACH not in path:
            if "{" in name:
                raise UserInputError(f"metric {name!r}: a name with {{fields}} needs a path through a list")
            found.append((name, lookup(document, path)))
            continue
        listed, field = path.split(EACH, 1)
        items = lookup(document, listed)
        items = [] if items is None else items
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise UserInputError(f"metric {name!r}: {listed!r} is not a list of objects")
        for item in items:
            try:
                found.append((name.format_map(item), lookup(item, field)))
            except (KeyError, ValueError) as error:
                raise UserInputError(f"metric {name!r}: an item of {listed!r} has no field {error}") from None
    values: dict[str, float] = {}
    for name, value in found:
        if name in values:
            raise UserInputError(f"two metrics are named {name!r}")
        if value is None:
            continue
        if not isinstance(value, (bool, int, float)) or not math.isfinite(value):
            raise UserInputError(f"metric {name!r}: {value!r} is not a finite number")
        values[name] = float(value)
    return values


def confusion_matrix(categories: Any, matrix: Any) -> dict[str, Any]:
    """ClassificationMetrics' `confusionMatrix` metadata, as `log_confusion_matrix` sets it."""
    square = isinstance(categories, list) and isinstance(matrix, list) and len(matrix) == len(categories)
    if not square or any(not isinstance(row, list) or len(row) != len(categories) for row in matrix):
        raise UserInputError("the confusion matrix needs one row of one count per category for each category")
    if any(type(count) is not int or count < 0 for row in matrix for count in row):
        raise UserInputError("the confusion matrix holds counts: whole numbers, none negative")
    return {
        "annotationSpecs": [{"displayName": str(category)} for category in categories],
        "rows": [{"row": list(row)} for row in matrix],
    }


def report_metadata(report: dict[str, Any], document: Any) -> dict[str, Any]:
    """The artifact metadata of a Metrics or ClassificationMetrics report, read from `document`."""
    if report["type"] == "Metrics":
        return metric_values(report["metrics"], document)
    return {
        "confusionMatrix": confusion_matrix(
            lookup(document, report["categories"]), lookup(document, report["matrix"])
        )
    }


def build_reports(
    reports: dict[str, dict[str, Any]], paths: dict[str, str]
) -> dict[str, tuple[bytes, dict[str, Any]]]:
    """Each report's body and metadata, from the file its declaration names in one of the outputs."""
    built = {}
    for name, report in reports.items():
        source = Path(paths[report["port"]]) / report["file"]
        try:
            content = source.read_bytes()
            if report["type"] == "Markdown":
                built[name] = (content, {})
                continue
            metadata = report_metadata(report, json.loads(content))
        except FileNotFoundError:
            raise UserInputError(
                f"KFP report {name!r}: output {report['port']!r} has no {report['file']}"
            ) from None
        except (ValueError, UserInputError) as error:
            raise UserInputError(
                f"KFP report {name!r} from {report['port']}/{report['file']}: {error}"
            ) from None
        built[name] = (json.dumps(metadata, indent=2).encode(), metadata)
    return built


def main(argv: list[str]) -> int:
    executor_json, rest = (argv[0], argv[1:]) if argv else ("", [])
    reports_json = "{}"
    if rest[:1] == ["--reports"] and len(rest) > 1:
        reports_json, rest = rest[1], rest[2:]
    if len(rest) < 2 or rest[0] != "--":
        print(USAGE, file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    try:
        executor_input = json.loads(executor_json)
        reports = json.loads(reports_json)
    except ValueError as error:
        print(f"executor input or reports: not JSON ({error})", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    paths = output_paths(executor_input)
    for path in paths.values():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    code = subprocess.run(rest[1:], check=False).returncode
    output_file = executor_input.get("outputs", {}).get("outputFile")
    if code != 0 or not output_file:
        return code
    try:
        built = build_reports(reports, paths)
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    for name, (body, _) in built.items():
        atomic_write_bytes(Path(paths[name]), body)
    metadata = {name: built_metadata for name, (_, built_metadata) in built.items()}
    Path(output_file).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(output_file), json.dumps(executor_output(executor_input, metadata)))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
