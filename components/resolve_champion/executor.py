"""resolve_champion: the champion as a node of the graph, in the spirit of TFX's Resolver.

Framework-free interface. Reads which version a registry pointer (`production`) names and writes a
folder: `champion.json` (schema `champion_record`) and, when there is a champion, the registered
artifact in `model/`, exactly as registered (MLflow's download note removed), so the folder's content
identifies the model and an unchanged champion keeps evaluate's inputs, and its cache key, unchanged.
No production model is not an error: the record says there is none and why.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from mnist_mlops import contracts
from mnist_mlops.atomic import staged_dir
from mnist_mlops.champions import MODEL, RECORD
from mnist_mlops.ports import checked
from mnist_mlops.registry import client, pointer_version, registry_uri, sqlite_file
from mnist_mlops.uris import redact


@checked("resolve_champion")
def run_resolve_champion(
    champion: str | Path,
    *,
    model_name: str = "mnist-mlops",
    pointer: str = "production",
    registry: str | None = None,
) -> dict[str, Any]:
    """Write the folder `champion`; returns its record."""
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
    }
    with staged_dir(Path(champion)) as stage:
        if version is not None:
            _download(uri, model_name, version, stage / MODEL)
        contracts.write_json(stage / RECORD, record, "champion_record")
    print(f"champion: {record['reason']}", flush=True)
    return record


def _download(uri: str, model_name: str, version: str, destination: Path) -> None:
    import mlflow.artifacts

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    source = client(uri).get_model_version_download_uri(model_name, version)
    scratch = destination.with_name(".download")
    mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(scratch), tracking_uri=uri)
    (model_dir,) = {path.parent for path in scratch.rglob("MLmodel")}
    # MLflow adds a note of the registered name and version on download; without it the folder holds
    # exactly the registered artifact.
    (model_dir / "registered_model_meta").unlink(missing_ok=True)
    model_dir.rename(destination)
    shutil.rmtree(scratch, ignore_errors=True)
