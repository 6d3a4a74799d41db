"""resolve_champion: the champion as a node of the graph, in the spirit of TFX's Resolver.

Framework-free interface. Reads which version a registry pointer (`production`) names and writes a
folder (`mnist_mlops.champions`): `champion.json` (schema `champion_record`) and, when there is a
champion, the registered MLflow model in `model/` as train wrote it (without MLflow's download note
and register's scoring export) and its reference bundle in `reference/` (`mnist_mlops.references`:
what it was trained and tested on), so evaluate can tell whether new data still describes production.
Beside them `traffic.json` (schema `traffic_summary`): the newest images clients sent, from the scoring
server's request log.

No production model, a reference the registry no longer holds, or a quiet request log are not errors:
the record says what is missing and why (a missing reference also as a warning). No timestamps of our
own, so the same champion and the same log give the same folder, and evaluate's cache key stays.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from mnist_mlops import contracts, data_shift, references
from mnist_mlops.atomic import staged_dir
from mnist_mlops.champions import MODEL, RECORD, REFERENCE, TRAFFIC
from mnist_mlops.deployments import request_log_dir
from mnist_mlops.errors import UserInputError
from mnist_mlops.onnx_export import EXPORT_FOLDER
from mnist_mlops.ports import checked
from mnist_mlops.provenance import utc_iso
from mnist_mlops.registry import download_version, pointer_version, registry_uri, sqlite_file
from mnist_mlops.serving.request_log import log_state, read_records
from mnist_mlops.uris import redact

NO_REFERENCE = {
    "found": False,
    "uri": None,
    "dataset_version": None,
    "reason": "no production model: nothing to compare new data with",
}


@checked("resolve_champion")
def run_resolve_champion(
    champion: str | Path,
    *,
    model_name: str = "mnist-mlops",
    pointer: str = "production",
    registry: str | None = None,
    request_log: str | Path | None = None,
    traffic_window: int = 1000,
) -> dict[str, Any]:
    """Write the folder `champion`; returns its record. `request_log` defaults to the folder a local
    server for `model_name` writes (`mnist-mlops serve`), beside the registry, which may not exist yet
    (nothing served); a folder given explicitly must exist."""
    if request_log is not None and not Path(request_log).is_dir():
        raise UserInputError(f"request_log {request_log}: no such folder")
    uri = registry_uri(registry)
    database = sqlite_file(uri)
    version = (
        None if database is not None and not database.is_file() else pointer_version(uri, model_name, pointer)
    )
    record = {
        "schema_version": 1,
        "found": version is not None,
        "model_name": model_name,
        "pointer": pointer,
        "version": version,
        "model_uri": f"models:/{model_name}/{version}" if version else None,
        "registry_uri": redact(uri),
        "reason": (
            f"{model_name}@{pointer} is version {version}"
            if version
            else f"no champion: {model_name}@{pointer} names no version in {redact(uri)}"
        ),
        "reference": NO_REFERENCE,
    }
    log_folder = Path(request_log) if request_log else request_log_dir(uri, model_name)
    traffic, record["traffic"] = _recent_traffic(log_folder, traffic_window)
    with staged_dir(Path(champion)) as stage:
        if version is not None:
            _download(uri, model_name, version, stage / MODEL)
            record["reference"] = references.fetch(uri, model_name, version, stage / REFERENCE)
        if traffic is not None:
            contracts.write_json(stage / TRAFFIC, traffic, "traffic_summary")
        contracts.write_json(stage / RECORD, record, "champion_record")
    print(f"champion: {record['reason']}", flush=True)
    if version is not None and not record["reference"]["found"]:
        print(f"warning: {record['reference']['reason']}", file=sys.stderr, flush=True)
    else:
        print(f"reference: {record['reference']['reason']}", flush=True)
    print(f"traffic: {record['traffic']['reason']}", flush=True)
    return record


def _recent_traffic(folder: Path, window: int) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The `traffic_summary` of the newest `window` images answered (2xx) from the log in `folder`, or
    None when there are too few; and the record's account of it. Every model version's requests count:
    what clients send does not depend on which version answered."""
    state = log_state(folder)  # before reading: a request logged meanwhile makes the next run read again
    seen = {"found": False, "folder": str(folder), "log_state": state, "images": 0}
    if not folder.is_dir():
        return None, seen | {"reason": f"no request log at {folder}"}
    records, log = read_records(folder)
    served = [
        (entry, image) for entry in records if 200 <= entry["status"] < 300 for image in entry["images"]
    ]
    newest = served[-window:]
    skipped = f"; {log['bad_lines']} unreadable lines skipped" if log["bad_lines"] else ""
    if len(newest) < data_shift.MIN_TRAFFIC_IMAGES:
        return None, seen | {
            "images": len(newest),
            "reason": f"only {len(served)} images served recently at {folder},"
            f" fewer than {data_shift.MIN_TRAFFIC_IMAGES}{skipped}",
        }
    times = utc_iso(newest[0][0]["time"]), utc_iso(newest[-1][0]["time"])
    requests = len({entry["request_id"] for entry, _ in newest})
    summary = data_shift.traffic_summary(
        [image for _, image in newest],
        {
            "folder": str(folder),
            "requests": requests,
            "window": window,
            "time_range": {"from": times[0], "to": times[1]},
        },
    )
    reason = (
        f"{len(newest)} images served between {times[0]} and {times[1]}"
        f" ({requests} requests, the newest of {len(served)} images in {folder}){skipped}"
    )
    return summary, seen | {"found": True, "images": len(newest), "reason": reason}


def _download(uri: str, model_name: str, version: str, destination: Path) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    download_version(uri, model_name, version, destination)
    # MLflow adds a note of the registered name and version on download, and register adds the scoring
    # export (evaluate scores the MLflow model): without them the folder holds the model as trained, so
    # a champion that is this run's challenger has its content (evaluate's `reuse_when_same_content`).
    # A removal that fails raises: a champion that kept its export would never have its challenger's
    # content, and every rerun would judge, register and deploy again.
    (destination / "registered_model_meta").unlink(missing_ok=True)
    if (destination / EXPORT_FOLDER).exists():
        shutil.rmtree(destination / EXPORT_FOLDER)
