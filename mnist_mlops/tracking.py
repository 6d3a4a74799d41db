"""MLflow tracking from inside a node, through the run the platform made for it.

Azure ML starts every pipeline step with `MLFLOW_TRACKING_URI` and `MLFLOW_RUN_ID` set to the step's own
run (a child of the pipeline job's run), so a component never creates runs or experiments of its own
there; the local runner does the same (`pipelines/local.py`: a parent run per pipeline run, a child run
per node). `node_run()` attaches to that run; a component run on its own (`mnist-mlops train ...`) logs
to a new run only when `MLFLOW_TRACKING_URI` says where, and not at all otherwise. Tracking off
(`MNIST_MLOPS_TRACKING=off`, what `mnist-mlops run --tracking off` sets) makes every call a no-op.

Locally the runner also gives each node an outbox (`OUTBOX`): the node's process keeps what it logs
there and the runner writes it into the node's run when the process ends, so a node that needs MLflow
for nothing else does not import it and its SQL store (about 3 s a node, 4% of a full run); on Azure ML
there is no runner, and nodes log directly.

Ending a run removes `MLFLOW_RUN_ID` from the environment, so the id is read once, when this module is
imported. Logging that fails (a tracking server that is down) fails the node with a
message naming the server and the way to run without tracking; the run's status is the runner's to set
(on Azure ML the job's exit code decides it).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mnist_mlops.errors import UserInputError
from mnist_mlops.uris import redact

TRACKING_SWITCH = "MNIST_MLOPS_TRACKING"
"""Set to "off" to run without tracking (`mnist-mlops run --tracking off`)."""
STANDALONE_EXPERIMENT = "mnist-mlops"
"""Where a component run on its own logs, when MLFLOW_TRACKING_URI is set."""
OUTBOX = "MNIST_MLOPS_TRACKING_OUTBOX"
"""A folder the local runner gives a node for what it logs (see the module docstring)."""
OUTBOX_CALLS = "calls.jsonl"
_PLATFORM_RUN_ID = os.environ.get("MLFLOW_RUN_ID")


def enabled() -> bool:
    return os.environ.get(TRACKING_SWITCH, "on").lower() != "off"


class NodeRun:
    """The node's MLflow run, or the outbox the runner writes into it; every method is a no-op when
    tracking is off or there is nowhere to log."""

    def __init__(self, run_id: str | None, outbox: Path | None = None) -> None:
        self.run_id = run_id
        self._outbox = outbox

    @property
    def active(self) -> bool:
        return self.run_id is not None or self._outbox is not None

    def params(self, values: dict[str, Any]) -> None:
        texts = {key: _text(value) for key, value in values.items()}
        if self._outbox is not None:
            self._keep("params", values=texts)
        elif self.active:
            import mlflow

            _logged(lambda: mlflow.log_params(texts))

    def metrics(self, values: dict[str, float], step: int | None = None) -> None:
        finite = {
            key: float(value)
            for key, value in values.items()
            if value is not None and math.isfinite(float(value))
        }
        if self._outbox is not None:
            self._keep("metrics", values=finite, step=step or 0, timestamp=_now_ms())
        elif self.active:
            import mlflow

            _logged(lambda: mlflow.log_metrics(finite, step=step))

    def tags(self, values: dict[str, Any]) -> None:
        texts = {key: _text(value)[:5000] for key, value in values.items()}
        if self._outbox is not None:
            self._keep("tags", values=texts)
        elif self.active:
            import mlflow

            _logged(lambda: mlflow.set_tags(texts))

    def artifact(self, path: str | Path, folder: str | None = None, name: str | None = None) -> None:
        """Attach a file (a figure, a report, the model card), as `name` if given: images show in the
        MLflow UI's run page and in the Azure ML studio's Images tab by their file name's extension."""
        if not self.active:
            return
        if self._outbox is not None:  # a copy: the file may be temporary
            (self._outbox / "files").mkdir(exist_ok=True)
            kept = Path(tempfile.mkdtemp(dir=self._outbox / "files")) / (name or Path(path).name)
            shutil.copyfile(path, kept)
            self._keep("artifact", path=str(kept.relative_to(self._outbox)), folder=folder)
            return
        import mlflow

        if name is None or name == Path(path).name:
            _logged(lambda: mlflow.log_artifact(str(path), artifact_path=folder))
            return
        with tempfile.TemporaryDirectory(prefix="mnist-mlops-artifact-") as scratch:
            renamed = Path(scratch) / name
            shutil.copyfile(path, renamed)
            _logged(lambda: mlflow.log_artifact(str(renamed), artifact_path=folder))

    def dataset(self, uri: str, dataset_version: str, context: str, tags: dict[str, Any]) -> None:
        """Record the dataset as an MLflow dataset input, by reference: its digest is the dataset version's
        16-hex prefix (MLflow allows 36 characters), the full content hash is in the input's tags."""
        if self._outbox is not None:
            labels = {key: _text(value) for key, value in tags.items()}
            self._keep("dataset", uri=uri, dataset_version=dataset_version, context=context, tags=labels)
        elif self.active:
            from mlflow import MlflowClient

            _log_dataset(MlflowClient(), self.run_id, uri, dataset_version, context, tags)

    def _keep(self, kind: str, **call: Any) -> None:
        with open(self._outbox / OUTBOX_CALLS, "a") as calls:
            calls.write(json.dumps({"kind": kind, **call}) + "\n")


def _log_dataset(
    client: Any, run_id: str, uri: str, dataset_version: str, context: str, tags: dict[str, Any]
) -> None:
    """The dataset input, built from MLflow's entities (which mlflow-skinny, the data environment's, has
    too); a store without dataset inputs gets the same facts as `dataset.*` tags."""
    from mlflow.entities import Dataset, DatasetInput, InputTag, RunTag

    from mnist_mlops.data_assets import asset_version

    scheme = uri.split("://", 1)[0] if "://" in uri else "file"
    source_type = {"file": "local", "https": "http"}.get(scheme, scheme)
    dataset = Dataset(
        name="images",
        digest=asset_version(dataset_version),
        source_type=source_type,
        source=json.dumps({"uri": uri}),
    )
    labels = {"mlflow.data.context": context, "dataset_version": dataset_version}
    labels |= {key: _text(value)[:500] for key, value in tags.items()}
    inputs = [DatasetInput(dataset, tags=[InputTag(key, value) for key, value in labels.items()])]
    try:
        client.log_inputs(run_id, datasets=inputs)
    except Exception as error:  # a store without dataset inputs (Azure ML does not list them as supported)
        print(f"warning: dataset input not logged ({str(error)[:200]}); recorded as tags", file=sys.stderr)
        fallback = [RunTag(f"dataset.{key}", value) for key, value in labels.items()]
        _logged(lambda: client.log_batch(run_id, tags=fallback))


def _calls(text: str) -> list[dict[str, Any]]:
    """An outbox's calls; a last line cut short (a node killed while writing it) is left out."""
    calls = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            calls.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(text.splitlines()):
                raise
    return calls


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


@contextlib.contextmanager
def node_run(run_name: str) -> Iterator[NodeRun]:
    """The node's run for the duration of the block (see the module docstring for which run)."""
    if enabled() and os.environ.get(OUTBOX):
        yield NodeRun(None, Path(os.environ[OUTBOX]))
        return
    if not enabled() or not (_PLATFORM_RUN_ID or os.environ.get("MLFLOW_TRACKING_URI")):
        yield NodeRun(None)
        return
    import mlflow

    if _PLATFORM_RUN_ID:
        started = _logged(lambda: mlflow.start_run(run_id=_PLATFORM_RUN_ID))
    else:
        from mnist_mlops.registry import experiment_id, with_retries

        uri = os.environ["MLFLOW_TRACKING_URI"]
        mlflow.set_tracking_uri(uri)
        experiment = _logged(lambda: with_retries(lambda: experiment_id(uri, STANDALONE_EXPERIMENT)))
        started = _logged(lambda: mlflow.start_run(experiment_id=experiment, run_name=run_name))
    try:
        yield NodeRun(started.info.run_id)
    except BaseException:
        with contextlib.suppress(Exception):  # the node's own error says more than a store that is down
            mlflow.end_run("FAILED")
        raise
    _logged(mlflow.end_run)


def _check_reachable(uri: str) -> None:
    """Fail fast on a tracking server that does not answer (MLflow's own client retries for minutes)."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10).close()
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise UserInputError(
            f"MLflow tracking at {redact(uri)} does not answer ({error}); start it, or run with "
            f"--tracking off ({TRACKING_SWITCH}=off) to run without tracking"
        ) from None


def _logged(action: Any) -> Any:
    """Run an MLflow call; a tracking store that cannot be reached is a clear error, not a traceback."""
    try:
        return action()
    except Exception as error:  # MLflow raises MlflowException, requests' and SQLAlchemy's errors
        where = redact(os.environ.get("MLFLOW_TRACKING_URI", "the default tracking store"))
        first = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        raise UserInputError(
            f"MLflow tracking at {where} failed ({first}); run with --tracking off "
            f"({TRACKING_SWITCH}=off) to run without tracking"
        ) from None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def end_interrupted(uri: str, experiment_id: str, run_id: str) -> None:
    """End as KILLED the MLflow runs of a pipeline run that died (its process was killed): the parent
    `run_id` and any child still RUNNING, as Azure ML ends a cancelled job's runs; otherwise the UI
    shows them running for ever."""
    from mnist_mlops.registry import client

    store = client(uri)
    children = _logged(
        lambda: store.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
    )
    for run in [*children, _logged(lambda: store.get_run(run_id))]:
        if run.info.status == "RUNNING":
            _logged(lambda run=run: store.set_terminated(run.info.run_id, "KILLED"))


class PipelineRuns:
    """The local runner's side, as Azure ML does it: a parent run per pipeline run and a child run per
    node (tag `mlflow.parentRunId`), the node's process started on its child run, and the status set from
    its exit code. A node served from the step cache gets a finished child run tagged `cached`, linked to
    the run that produced the result, so a cached rerun still reads whole in the UI."""

    CACHE_KEY_TAG = "mnist_mlops.cache_key"
    STANDING_KEY_TAG = "mnist_mlops.standing_key"
    """The key a result is also filed under by a component's reuse rule (`SameContentRule`)."""
    STATUS_TAG = "mnist_mlops.status"

    def __init__(self, uri: str, experiment: str, run_name: str, tags: dict[str, str]) -> None:
        from mnist_mlops.collector import long_lived
        from mnist_mlops.registry import client, experiment_id, with_retries

        self.uri = uri
        _check_reachable(uri)
        with long_lived("mlflow"):  # the runner's first work: MLflow's import and store stay for the run
            self._client = client(uri)
        self.experiment_id = _logged(lambda: with_retries(lambda: experiment_id(uri, experiment)))
        parent = _logged(lambda: self._client.create_run(self.experiment_id, run_name=run_name, tags=tags))
        self.run_id = parent.info.run_id
        self._outboxes: dict[str, Path] = {}

    def start_node(self, name: str, component: str, cache_key: str, standing_key: str | None = None) -> str:
        tags = {"mnist_mlops.component": component, self.CACHE_KEY_TAG: cache_key}
        return self._child(name, tags | ({self.STANDING_KEY_TAG: standing_key} if standing_key else {}))

    def environment(self, node_run_id: str) -> dict[str, str]:
        """What the node's process needs to attach to its run (what Azure ML sets in a job: components
        that use MLflow themselves, as register does, log there), its outbox for the rest, and MLflow's
        HTTP retries cut from minutes to seconds unless set: a store that goes down fails the node soon."""
        if node_run_id not in self._outboxes:
            self._outboxes[node_run_id] = Path(tempfile.mkdtemp(prefix="mnist-mlops-outbox-"))
        outbox = self._outboxes[node_run_id]
        return {
            OUTBOX: str(outbox),
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"),
            "MLFLOW_HTTP_REQUEST_TIMEOUT": os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "30"),
            "MLFLOW_TRACKING_URI": self.uri,
            "MLFLOW_RUN_ID": node_run_id,
            "MLFLOW_EXPERIMENT_ID": self.experiment_id,
        }

    def cached_node(
        self, name: str, component: str, cache_key: str, note: str | None, status: str = "cached"
    ) -> None:
        """A finished child run for a node whose result another run produced (reused from the cache, or
        a sweep's chosen trial: `status`), linked to that run and with its metrics."""
        from mlflow.entities import Metric

        producer = self._producer(cache_key)
        tags = {"mnist_mlops.component": component, self.CACHE_KEY_TAG: cache_key, self.STATUS_TAG: status}
        tags |= {"mnist_mlops.reused_run_id": producer.info.run_id} if producer else {}
        tags |= {"mnist_mlops.reused_because": note} if note else {}
        run_id = self._child(name, tags)
        if producer is not None and producer.data.metrics:
            metrics = [Metric(key, value, 0, 0) for key, value in producer.data.metrics.items()]
            _logged(lambda: self._client.log_batch(run_id, metrics=metrics))
        _logged(lambda: self._client.set_terminated(run_id, "FINISHED"))

    def finish(self, run_id: str, *, succeeded: bool) -> None:
        """What the node left in its outbox, then the status from the exit code, whatever the node's
        process set (as on Azure ML)."""
        outbox = self._outboxes.pop(run_id, None)
        if outbox is not None:
            try:
                self._deliver(run_id, outbox)
            except Exception:  # a failed node's own error says more
                if succeeded:
                    raise
            finally:
                shutil.rmtree(outbox, ignore_errors=True)
        if succeeded:
            _logged(lambda: self._client.set_tag(run_id, self.STATUS_TAG, "done"))
        _logged(lambda: self._client.set_terminated(run_id, "FINISHED" if succeeded else "FAILED"))

    def _deliver(self, run_id: str, outbox: Path) -> None:
        """Write a node's outbox into its run: params, tags and metric history in batches of MLflow's
        limits, then the files and the dataset inputs."""
        from mlflow.entities import Metric, Param, RunTag

        calls_file = outbox / OUTBOX_CALLS
        calls = _calls(calls_file.read_text()) if calls_file.exists() else []
        params: dict[str, str] = {}
        tags: dict[str, str] = {}
        metrics = []
        for call in calls:
            if call["kind"] == "params":
                changed = [key for key, value in call["values"].items() if params.get(key, value) != value]
                if changed:
                    raise UserInputError(
                        f"MLflow params cannot change: {', '.join(changed)} logged again with another value"
                    )
                params |= call["values"]
            elif call["kind"] == "tags":
                tags |= call["values"]
            elif call["kind"] == "metrics":
                metrics += [
                    Metric(key, value, call["timestamp"], call["step"])
                    for key, value in call["values"].items()
                ]
        labels = [Param(key, value) for key, value in params.items()]
        labels += [RunTag(key, value) for key, value in tags.items()]
        for start in range(0, len(labels), 100):
            chunk = labels[start : start + 100]
            _logged(
                lambda chunk=chunk: self._client.log_batch(
                    run_id,
                    params=[item for item in chunk if isinstance(item, Param)],
                    tags=[item for item in chunk if isinstance(item, RunTag)],
                )
            )
        for start in range(0, len(metrics), 1000):
            _logged(lambda start=start: self._client.log_batch(run_id, metrics=metrics[start : start + 1000]))
        for call in calls:
            if call["kind"] == "artifact":
                path, folder = str(outbox / call["path"]), call["folder"]
                _logged(lambda: self._client.log_artifact(run_id, path, artifact_path=folder))  # noqa: B023
            elif call["kind"] == "dataset":
                arguments = (call["uri"], call["dataset_version"], call["context"], call["tags"])
                _log_dataset(self._client, run_id, *arguments)

    def _child(self, name: str, tags: dict[str, str]) -> str:
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        run = _logged(
            lambda: self._client.create_run(
                self.experiment_id, run_name=name, tags={MLFLOW_PARENT_RUN_ID: self.run_id, **tags}
            )
        )
        return run.info.run_id

    def _producer(self, cache_key: str) -> Any:
        """The latest run that produced the result filed under `cache_key` (as its own key or as the
        standing key of a reuse rule), if the store still has it."""
        for tag in (self.CACHE_KEY_TAG, self.STANDING_KEY_TAG):
            found = _logged(
                lambda tag=tag: self._client.search_runs(
                    [self.experiment_id],
                    f"tags.`{tag}` = '{cache_key}' and tags.`{self.STATUS_TAG}` = 'done'",
                    max_results=1,
                    order_by=["attributes.start_time DESC"],
                )
            )
            if found:
                return found[0]
        return None
