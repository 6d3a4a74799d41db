"""`mnist-mlops lineage REF`: what produced a model, a run's result, or the answer to one request.

REF is a registry reference (``models:/<name>/<version>`` or ``models:/<name>@<alias>``), a run folder
(``runs/<id>``, or the bare id under ``--runs-dir``) or a request id (a scoring response's `request_id`,
or the client's own `x-ms-client-request-id`), looked up in the local request logs. The answer is one
chain (schema `lineage`): the request -> the model version -> the pipeline run and its nodes (run, or
reused from the cache) -> the dataset (content hash, source, age, validation verdict) -> the code commit
-> the environment hash -> the blessing's reasons -> the version's deployments and their times.

Each link is read where it is recorded: the version's tags (register's lineage), the run folder
(run.json, and the data report, training summary, blessing and registration record its nodes wrote),
the version's reference bundle in the registry (its data report, when the run folder is not on this
machine) and the deployment history tags. A link that cannot be read is named in `notes` with the
reason; a REF that names nothing, or a registry that cannot be reached, is an error. It sits with the
serving code because it reads the request log and the model references the server takes (the layers
allow the shared runtime below to import neither).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mnist_mlops import __version__, contracts
from mnist_mlops.errors import UserInputError
from mnist_mlops.hashing import sha256_file
from mnist_mlops.provenance import utc_iso
from mnist_mlops.uris import redact

RUN_RECORD = "run.json"
RUN_RECORD_VERSION = 1
"""The run_record schema_version this code reads; a record of any other version is refused naming it."""
RUN_OUTPUTS = ("data_report", "training_summary", "blessing", "registration_record")
"""The node outputs (by port, each validated by the schema of that name) the chain reads from a run."""
MLFLOW_SETTINGS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
"""While tracing, unless the environment says otherwise: a reader fails in seconds when a tracking server
is down (not after MLflow's default four minutes of retries), and a download draws no progress bar."""


def trace(
    ref: str, *, registry: str | None = None, runs_dir: Path = Path("runs"), requests: Path | None = None
) -> dict[str, Any]:
    """The lineage document of `ref` (see the module docstring). `registry`: the MLflow registry URI
    (default: the one a run folder's registration names, else $MLFLOW_TRACKING_URI or ./mlflow.db);
    `runs_dir`: where run folders are looked for; `requests`: the request log folder (default: every
    local endpoint's logs beside the registry)."""
    with _mlflow_settings():
        document = _Tracer(registry, runs_dir).trace(ref, requests)
    contracts.validate(document, "lineage", source=f"lineage of {ref}")
    return document


@contextmanager
def _mlflow_settings() -> Iterator[None]:
    added = {name: value for name, value in MLFLOW_SETTINGS.items() if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def read_run_record(folder: Path) -> dict[str, Any]:
    """A run folder's run.json, refused (naming its version) unless it is a version this code reads."""
    path = folder / RUN_RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserInputError(f"{path}: not a readable run record ({error})") from None
    version = record.get("schema_version") if isinstance(record, dict) else None
    if version is None:
        raise UserInputError(f"{path}: no schema_version: not a run record written by mnist-mlops run")
    if version != RUN_RECORD_VERSION:
        raise UserInputError(
            f"{path}: run record schema_version {version!r}; mnist-mlops {__version__} reads version"
            f" {RUN_RECORD_VERSION} only (read it with the mnist-mlops that wrote it)"
        )
    contracts.validate(record, "run_record", source=str(path))
    return record


class _Tracer:
    def __init__(self, registry: str | None, runs_dir: Path) -> None:
        self.registry = registry
        self.runs_dir = runs_dir
        self.notes: list[str] = []

    def trace(self, ref: str, requests: Path | None) -> dict[str, Any]:
        from mnist_mlops.registry import registry_uri

        if ref.startswith("models:"):
            from mnist_mlops.serving.scorer import parse_model_uri

            name, version, alias = parse_model_uri(ref)
            uri = registry_uri(self.registry)
            version = self._resolve(uri, ref, name, version, alias)
            return self._chain("model", ref, uri, model=(name, version), run=None)
        if (folder := self._run_folder(ref)) is not None:
            record = read_run_record(folder)
            facts = self._outputs(folder, record)
            registration = facts.get("registration_record")
            registered = registration is not None and registration["registered"]
            model = (registration["model_name"], registration["version"]) if registered else None
            uri = self._registry_of(registration) if model else None
            return self._chain("run", ref, uri, model=model, run=(folder, record, facts))
        uri = registry_uri(self.registry)
        records = self._requests(ref, uri, requests)
        answered = sorted({(record["model_name"], record["model_version"]) for record in records})
        name, version = records[-1]["model_name"], records[-1]["model_version"]
        if len(answered) > 1:
            self.notes.append(
                f"{len(records)} requests carry the id {ref}, answered by "
                + ", ".join(f"{model} v{number}" for model, number in answered)
                + f": the chain follows the latest ({name} v{version})"
            )
        document = self._chain("request", ref, uri, model=(name, version), run=None)
        document["requests"] = [_request_entry(record) for record in records]
        return document

    def _chain(
        self,
        kind: str,
        ref: str,
        uri: str | None,
        *,
        model: tuple[str, str] | None,
        run: tuple[Path, dict[str, Any], dict[str, Any]] | None,
    ) -> dict[str, Any]:
        """The document from what `ref` resolved to: a model version, and the run folder when `ref` was
        one (its record and outputs), else the one the version's pipeline_run_id names."""
        document: dict[str, Any] = {
            "schema_version": 1,
            "ref": ref,
            "kind": kind,
            "registry_uri": redact(uri) if uri else None,
            "requests": [],
            "model": None,
            "run": None,
            "dataset": None,
            "code_version": None,
            "environment_hash": None,
            "blessing": None,
            "deployments": [],
            "in_production": None,
            "notes": self.notes,
        }
        tags: dict[str, str] = {}
        if model is not None:
            document["model"], tags = self._model(uri, *model)
            model = model if document["model"] else None
        produced_by = tags.get("pipeline_run_id")
        if run is None and produced_by:
            folder = self._produced_by(produced_by)
            try:
                record = read_run_record(folder) if folder is not None else None
            except UserInputError as error:  # the model's chain goes on without its run
                self.notes.append(str(error))
                record = None
            if record is None:
                shown = str(folder) if folder is not None else None
                document["run"] = {"run_id": produced_by, "found": False, "folder": shown}
            else:
                run = (folder, record, self._outputs(folder, record))
        elif run is not None and produced_by and produced_by != run[1]["run_id"]:
            self.notes.append(
                f"{model[0]} v{model[1]} was registered by run {produced_by}; run {run[1]['run_id']} reused"
                " that registration"
            )
        facts: dict[str, Any] = {}
        if run is not None:
            folder, record, facts = run
            document["run"] = _run_entry(folder, record)
        document["dataset"] = self._dataset(uri, tags, facts.get("data_report"))
        registered = facts.get("registration_record", {}).get("lineage", {})
        trained = facts.get("training_summary", {})
        for key in ("code_version", "environment_hash"):
            document[key] = tags.get(key) or registered.get(key) or trained.get(key)
        document["blessing"] = self._blessing(uri, tags, facts.get("blessing"))
        if model is not None:
            document["deployments"], document["in_production"] = self._deployments(uri, *model)
        return document

    def _run_folder(self, ref: str) -> Path | None:
        """The run folder `ref` names (a path, a run.json, or a run id under runs_dir), else None."""
        for candidate in (Path(ref), self.runs_dir / ref):
            if candidate.is_file() and candidate.name == RUN_RECORD:
                return candidate.parent
            if (candidate / RUN_RECORD).is_file():
                return candidate
        if Path(ref).is_dir():
            raise UserInputError(
                f"{ref}: a folder without {RUN_RECORD}, not a run folder (mnist-mlops run writes one per run"
                " under --runs-dir)"
            )
        return None

    def _produced_by(self, run_id: str) -> Path | None:
        folder = self.runs_dir / run_id
        if (folder / RUN_RECORD).is_file():
            return folder
        if run_id == "manual":
            self.notes.append("registered outside a pipeline run: no run record, nodes or blessing reasons")
        else:
            self.notes.append(
                f"pipeline run {run_id}: no run folder {folder} on this machine (pass --runs-dir: where"
                " mnist-mlops run wrote it; on Azure ML the id names the pipeline job in the studio); the"
                " run's nodes are kept only there"
            )
        return None

    def _outputs(self, folder: Path, record: dict[str, Any]) -> dict[str, Any]:
        """The RUN_OUTPUTS the run's nodes wrote, read and validated from the run folder itself (run.json
        names them relative to where the run was started); the path of the data report, not its body."""
        found: dict[str, Any] = {}
        for node in record["nodes"]:
            for port, output in node["outputs"].items():
                if port not in RUN_OUTPUTS:
                    continue
                path = folder / node["name"] / Path(output["path"]).name
                if port == "data_report" and path.is_file():
                    found[port] = path
                    continue
                try:
                    found[port] = contracts.read_json(path, port)
                except UserInputError as error:
                    self.notes.append(f"{port} of run {folder.name}: {error}")
        return found

    def _registry_of(self, registration: dict[str, Any] | None) -> str:
        """The registry to ask about a run's model: --registry, else the SQLite registry the run's
        registration names when it is on this machine, else the default."""
        from mnist_mlops.registry import registry_uri, sqlite_file

        recorded = registration["registry_uri"] if registration else None
        database = sqlite_file(recorded) if recorded else None
        if self.registry is None and database is not None and database.is_file():
            return recorded
        return registry_uri(self.registry)

    def _reachable(self, uri: str) -> None:
        from mnist_mlops.registry import sqlite_file

        database = sqlite_file(uri)
        if database is not None and not database.is_file():
            raise UserInputError(f"no registry at {uri} (pass --registry: the registry mnist-mlops run used)")

    def _ask(self, uri: str, what: str, action: Any) -> Any:
        """`action()` against the registry; None when what it asks for does not exist; a UserInputError
        naming the registry when it cannot be reached or read."""
        from mlflow.exceptions import MlflowException

        try:
            return action()
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            reason = _first_line(error)
        except Exception as error:  # SQLAlchemy's and requests' errors reach us unwrapped
            reason = _first_line(error)
        raise UserInputError(
            f"the registry {redact(uri)} cannot be reached or read ({what}: {reason}); pass --registry"
            " to ask another"
        )

    def _resolve(self, uri: str, ref: str, name: str, version: str | None, alias: str | None) -> str:
        """The version `ref` names, or an error saying what the registry holds instead."""
        from mnist_mlops.registry import pointer_version, pointers

        self._reachable(uri)
        where = f"the registry {redact(uri)}"
        registry = _client(uri)
        if self._ask(uri, f"model {name}", lambda: registry.get_registered_model(name)) is None:
            names = self._ask(uri, "model names", lambda: registry.search_registered_models())
            known = ", ".join(sorted(model.name for model in names or [])) or "none"
            raise UserInputError(f"{ref}: no model named {name} in {where} (registered models: {known})")
        versions = self._ask(
            uri, f"{name} versions", lambda: registry.search_model_versions(f"name='{name}'")
        )
        if alias is not None:
            version = pointer_version(uri, name, alias)
            if version is None:
                named = pointers(uri, name, versions or [])
                held = ", ".join(f"{p} -> v{v}" for v, ps in sorted(named.items()) for p in ps) or "none"
                raise UserInputError(f"{ref}: {name} has no alias {alias} in {where} (its aliases: {held})")
            return version
        numbers = sorted(int(found.version) for found in versions or [])
        if int(version) not in numbers:
            listed = ", ".join(map(str, numbers)) or "none"
            raise UserInputError(f"{ref}: {name} has no version {version} in {where} (versions: {listed})")
        return version

    def _model(self, uri: str, name: str, version: str) -> tuple[dict[str, Any] | None, dict[str, str]]:
        """The version's registry entry and its tags; (None, {}) with a note when it is not there."""
        from mnist_mlops.registry import READY_TAG, pointers

        self._reachable(uri)
        registry = _client(uri)
        found = self._ask(uri, f"{name} version {version}", lambda: registry.get_model_version(name, version))
        if found is None:
            self.notes.append(f"{name} v{version} is not in the registry {redact(uri)}: the chain ends here")
            return None, {}
        versions = self._ask(
            uri, f"{name} versions", lambda: registry.search_model_versions(f"name='{name}'")
        )
        tags = dict(found.tags or {})
        entry = {
            "name": name,
            "version": str(version),
            "uri": f"models:/{name}/{version}",
            "aliases": sorted(pointers(uri, name, versions or []).get(str(version), [])),
            "status": tags.get(READY_TAG),
            "registered_at": utc_iso(datetime.fromtimestamp(found.creation_timestamp / 1000, UTC)),
            "mlflow_run_id": found.run_id or None,
            "pipeline_run_id": tags.get("pipeline_run_id"),
            "metrics": _numbers(
                {k.removeprefix("metric."): v for k, v in tags.items() if k.startswith("metric.")}
            ),
            "image_shape": tags.get("image_shape"),
            "classes": tags.get("classes"),
            "component_versions": {
                key.removeprefix("component."): value
                for key, value in tags.items()
                if key.startswith("component.")
            },
        }
        return entry, tags

    def _dataset(
        self, uri: str | None, tags: dict[str, str], report_path: Path | None
    ) -> dict[str, Any] | None:
        """The dataset from the run folder's data report when it is the one registered, else from the
        version's reference bundle; just its version (from the tags) when neither can be read."""
        from mnist_mlops import references

        registered = tags.get("data_report_sha256")
        if report_path is not None:
            digest = sha256_file(report_path)
            if registered is None or digest == registered:
                report = self._read_report(report_path, str(report_path))
                if report is not None:
                    return self._dataset_entry(report, str(report_path), digest, tags)
            else:
                self.notes.append(
                    f"{report_path} is not the data report registered with the model (sha256 {digest[:12]},"
                    f" registered {registered[:12]}): reading the registry's copy"
                )
        if uri is not None and tags.get(references.TAG):
            source = f"{tags[references.TAG].rstrip('/')}/{references.DATA_REPORT}"
            with tempfile.TemporaryDirectory(prefix="mnist-mlops-lineage-") as scratch:
                path = self._download(uri, source, Path(scratch))
                digest = sha256_file(path) if path is not None else None
                if digest is not None and registered not in (None, digest):
                    self.notes.append(f"{source} is not the data report registered with the model")
                elif digest is not None and (report := self._read_report(path, source)) is not None:
                    return self._dataset_entry(report, source, digest, tags)
        if tags.get("dataset_version"):
            return {"version": tags["dataset_version"], "data_report_sha256": registered, "read_from": None}
        return None

    def _dataset_entry(
        self, report: dict[str, Any], source: str, digest: str, tags: dict[str, str]
    ) -> dict[str, Any]:
        registered = tags.get("dataset_version")
        if registered not in (None, report["dataset_version"]):
            self.notes.append(
                f"{source} describes dataset {report['dataset_version'][:12]}; the model was registered"
                f" as trained on {registered[:12]}"
            )
        return _dataset_entry(report, source, digest)

    def _read_report(self, path: Path, source: str) -> dict[str, Any] | None:
        try:
            return contracts.read_json(path, "data_report")
        except UserInputError as error:
            self.notes.append(f"data report {source}: {error}")
            return None

    def _download(self, uri: str, source: str, scratch: Path, what: str = "the data report") -> Path | None:
        import mlflow.artifacts

        try:
            return Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=source, dst_path=str(scratch), tracking_uri=uri
                )
            )
        except Exception as error:  # MLflow, OS and HTTP errors: the registry may outlive its artifacts
            self.notes.append(f"{what} {source} cannot be read ({_first_line(error)})")
            return None

    def _blessing(
        self, uri: str | None, tags: dict[str, str], blessing: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """The blessing from the run folder, else the copy register keeps with the version (its
        `evaluation_uri`: the run folder may be on another machine, or Azure ML's), else the tags alone."""
        from mnist_mlops.registry import JUDGEMENT_BLESSING, JUDGEMENT_TAG, SHIFT_TAG

        read_from = "run folder"
        if blessing is None and uri is not None and tags.get(JUDGEMENT_TAG):
            source = f"{tags[JUDGEMENT_TAG].rstrip('/')}/{JUDGEMENT_BLESSING}"
            with tempfile.TemporaryDirectory(prefix="mnist-mlops-lineage-") as scratch:
                path = self._download(uri, source, Path(scratch), "the blessing")
                try:
                    blessing = contracts.read_json(path, "blessing") if path is not None else None
                except UserInputError as error:
                    self.notes.append(f"blessing {source}: {error}")
            read_from = "registry artifacts" if blessing is not None else read_from
        if blessing is not None:
            return {
                "blessed": blessing["blessed"],
                "reasons": blessing["reasons"],
                "data_shift": blessing["data_shift"]["decision"],
                "read_from": read_from,
            }
        if "blessed" not in tags:
            return None
        return {
            "blessed": tags["blessed"] == "True",
            "reasons": [],
            "data_shift": tags.get(SHIFT_TAG),
            "read_from": "registry tags",
        }

    def _deployments(self, uri: str, name: str, version: str) -> tuple[list[dict[str, Any]], bool]:
        """The deployment history's records about `version`: each with what it did to production here."""
        from mnist_mlops.deployments import production_version, read_history

        events = []
        for record in read_history(uri, name):
            moved = record["action"] == "rollback" or record["outcome"] == "deployed"
            if record["model_version"] == version:
                effect = "entered" if moved else "refused"
            elif record["previous_version"] == version and moved:
                effect = "left"
            else:
                continue
            keys = (
                "deployed_at",
                "action",
                "outcome",
                "target",
                "endpoint",
                "model_version",
                "previous_version",
            )
            events.append({key: record[key] for key in keys} | {"effect": effect})
        current = self._ask(uri, f"{name}@production", lambda: production_version(uri, name))
        return events, current == version

    def _requests(self, ref: str, uri: str, folder: Path | None) -> list[dict[str, Any]]:
        """The request log records carrying `ref` as their id, or an error naming everything tried."""
        from mnist_mlops.deployments import request_log_dir
        from mnist_mlops.serving.request_log import find_records, usable_request_id

        folder = folder or request_log_dir(uri, "any").parent  # every local endpoint's logs
        tried = (
            f"not a registry reference (models:/<name>/<version> or models:/<name>@<alias>); no run folder"
            f" {ref} or {self.runs_dir / ref}"
        )
        if usable_request_id(ref) is None:
            raise UserInputError(f"{ref}: {tried}; and not a request id (letters, digits and ._:- only)")
        records, files = find_records(folder, ref)
        if not records:
            raise UserInputError(
                f"{ref}: {tried}; no request with that id in the request logs under {folder} ({len(files)}"
                " log files searched; pass --requests for another folder)"
            )
        return records


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def _client(uri: str):
    from mnist_mlops.registry import client

    return client(uri)


def _numbers(values: dict[str, str]) -> dict[str, float]:
    numbers = {}
    for key, text in values.items():
        try:
            numbers[key] = float(text)
        except ValueError:
            continue
    return numbers


def _run_entry(folder: Path, record: dict[str, Any]) -> dict[str, Any]:
    nodes = [
        {key: node[key] for key in ("name", "component", "component_version", "status", "seconds")}
        | ({"reused_because": node["reused_because"]} if "reused_because" in node else {})
        for node in record["nodes"]
    ]
    tracking = record.get("tracking")
    return {
        "run_id": record["run_id"],
        "found": True,
        "folder": str(folder),
        "status": record["status"],
        "started_at": record["started_at"],
        "finished_at": record["finished_at"],
        "outcome": record["outcome"],
        "mlflow_run_id": tracking["run_id"] if tracking else None,
        "nodes": nodes,
    }


def _dataset_entry(report: dict[str, Any], source: str, digest: str) -> dict[str, Any]:
    ingested = datetime.fromisoformat(report["generated_at"])
    newest = datetime.fromisoformat(report["newest_source_time"])
    checks = report["checks"]
    return {
        "version": report["dataset_version"],
        "data_report_sha256": digest,
        "read_from": source,
        "source_uri": report["source_uri"],
        "source_format": report["source_format"],
        "data_asset": report.get("data_asset"),
        "ingested_at": report["generated_at"],
        "newest_source_time": report["newest_source_time"],
        "age_days": round((ingested - newest).total_seconds() / 86400, 1),
        "max_age_days": report["policy"]["max_age_days"],
        "validation": report["outcome"],
        "checks_passed": sum(check["outcome"] == "pass" for check in checks),
        "findings": [
            f"{check['outcome']}: {check['reason']}" for check in checks if check["outcome"] != "pass"
        ],
    }


def _request_entry(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "request_id": record["request_id"],
        "client_request_id": record.get("client_request_id"),
        "time": record["time"],
        "status": record["status"],
        "latency_ms": record["latency_ms"],
        "model_name": record["model_name"],
        "model_version": record["model_version"],
        "predictions": [
            {key: image[key] for key in ("class", "label", "confidence") if key in image}
            for image in record["images"]
        ],
        "log_file": record["file"],
    }


def render(document: dict[str, Any]) -> str:
    """The lineage document as the chain a person reads, one link per paragraph."""
    lines: list[str] = []

    def add(label: str, *texts: str) -> None:
        for number, text in enumerate(texts):
            lines.append(f"{label if number == 0 else '':<12}{text}")

    for request in document["requests"]:
        answers = ", ".join(
            f"{item.get('label', item['class'])} ({item['confidence']:.2f})"
            for item in request["predictions"]
        )
        client = f", client id {request['client_request_id']}" if request["client_request_id"] else ""
        add(
            "request",
            f"{request['request_id']}{client} at {request['time']}",
            f"HTTP {request['status']} in {request['latency_ms']} ms from {request['model_name']}"
            f" v{request['model_version']}" + (f": {answers}" if answers else ""),
            f"log {request['log_file']}",
        )
    if model := document["model"]:
        metrics = ", ".join(f"{name} {value:g}" for name, value in sorted(model["metrics"].items()))
        aliases = ", ".join(model["aliases"]) or "-"
        add(
            "model",
            f"{model['uri']}  aliases: {aliases}  status: {model['status'] or '-'}",
            f"registered {model['registered_at']}, logged in MLflow run {model['mlflow_run_id'] or '-'}",
            f"metrics {metrics or '-'}",
            f"takes {model['image_shape'] or '-'}, answers {model['classes'] or '-'}",
        )
    if run := document["run"]:
        if not run["found"]:
            add("run", f"{run['run_id']}: run folder not found")
        else:
            add(
                "run",
                f"{run['run_id']} {run['status']} {run['started_at']} -> {run['finished_at'] or '...'}",
                f"{run['folder']}: {run['outcome']}",
            )
            if run["mlflow_run_id"]:
                add("", f"MLflow run {run['mlflow_run_id']}, a child run per node")
            for node in run["nodes"]:
                reused = f"  ({node['reused_because']})" if "reused_because" in node else ""
                status = "cache hit" if node["status"] == "cached" else node["status"]
                add("", f"  {node['name']:<18}{status:<10}{node['seconds']:>8.1f} s{reused}")
    if dataset := document["dataset"]:
        add("dataset", dataset["version"])
        if dataset["read_from"]:
            add(
                "",
                f"source {dataset['source_uri']} ({dataset['source_format']})",
                f"ingested {dataset['ingested_at']}, newest file {dataset['newest_source_time']}"
                f" ({dataset['age_days']:g} days old then; limit {dataset['max_age_days']})",
                f"validation {dataset['validation']}: {dataset['checks_passed']} checks passed",
                *[f"  {finding}" for finding in dataset["findings"]],
                f"report {dataset['read_from']}",
            )
    add("code", document["code_version"] or "-")
    add("environment", document["environment_hash"] or "-")
    if blessing := document["blessing"]:
        verdict = "blessed" if blessing["blessed"] else "NOT blessed"
        add("blessing", f"{verdict} (data shift: {blessing['data_shift'] or '-'})")
        add("", *[f"  - {reason}" for reason in blessing["reasons"]])
    if model:
        add(
            "deployments",
            *[
                f"{event['deployed_at']}  {event['action']} {event['outcome']}: {_effect(event)}"
                f"  {event['target']} {event['endpoint'] or ''}".rstrip()
                for event in document["deployments"]
            ]
            or ["none"],
        )
        where = "in production" if document["in_production"] else "not in production"
        add("production", f"{model['name']} v{model['version']} is {where}")
    if document["registry_uri"]:
        add("registry", document["registry_uri"])
    if document["notes"]:
        add("notes", *[f"- {note}" for note in document["notes"]])
    return "\n".join(lines)


def _effect(event: dict[str, Any]) -> str:
    if event["effect"] == "entered":
        before = f"v{event['previous_version']}" if event["previous_version"] else "nothing"
        return f"v{event['model_version']} into production (was {before})"
    if event["effect"] == "left":
        return f"replaced by v{event['model_version']}"
    return f"v{event['model_version']} not put into production"
