"""The built-in retrain handlers (`mnist_mlops.retraining.BUILT_IN` names them): run the training pipeline
here, or submit it to Azure ML.

Either way the outcome is recorded as it happened: a run that fails is recorded with its exit code and
the reason, and an AML job only with the name the service gave it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnist_mlops.errors import UserInputError
from mnist_mlops.retraining import Handler, RetrainSettings

if TYPE_CHECKING:
    from azure.ai.ml.entities import PipelineJob

RUN_LINE = re.compile(r"run (?P<run_id>\S+) in (?P<run_dir>.+)")
"""The first line `mnist-mlops run` prints."""
EXPERIMENT = "mnist-mlops-retrain"
"""Retraining jobs get their own experiment, so the studio tells them from runs started by hand."""


def retrain_local(settings: RetrainSettings) -> Handler:
    """Run the training pipeline (`mnist-mlops run`) on the request's data in a child process in this
    working directory, so its runs land where a `mnist-mlops run` started here would put them; its output
    is passed through as it comes (training takes a while) and the run is waited for."""
    if not settings.data:
        raise UserInputError("on_breach=retrain_local needs retrain_data (what the training pipeline reads)")

    def run(request: dict[str, Any]) -> dict[str, Any]:
        command = [sys.executable, "-m", "mnist_mlops.cli", "run", "--data", request["data"]]
        command += ["--registry", settings.registry] if settings.registry else []
        command += ["--until", settings.until] if settings.until else []
        print(f"retraining: {' '.join(command)}", flush=True)
        started, last = None, "the pipeline printed nothing"
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as child:
            for line in child.stdout:
                print(line, end="", flush=True)
                started = started or RUN_LINE.fullmatch(line.rstrip("\n"))
                last = line.strip() or last
        run_record = Path(started["run_dir"]) / "run.json" if started else None
        if run_record is not None and run_record.is_file():
            last = json.loads(run_record.read_text())["outcome"]
        return {
            "status": "succeeded" if child.returncode == 0 else "failed",
            "run_id": started["run_id"] if started else None,
            "exit_code": child.returncode,
            "command": command,
            "detail": last,
        }

    return run


def aml_job(data: str | None) -> PipelineJob:
    """The training pipeline job on `data` (default: the pipeline's datastore path), validated offline the
    way `mnist-mlops submit` validates it."""
    from mnist_mlops.azure_jobs import validation_problems
    from mnist_mlops.pipelines.aml import training_job

    job = training_job(data) if data else training_job()
    problems = validation_problems(job)
    if problems:
        raise UserInputError("the retraining pipeline job is invalid: " + "; ".join(problems))
    return job


def retrain_aml(settings: RetrainSettings) -> Handler:
    """Submit the training pipeline job on the request's data to the workspace the settings name and
    return at once (a monitor does not wait hours for training)."""
    try:
        from mnist_mlops.azure_jobs import submit
    except ImportError:
        raise UserInputError(
            "on_breach=retrain_aml needs azure-ai-ml: pip install 'mnist-mlops[azure]'"
        ) from None
    from mnist_mlops.azure_identity import workspace_client

    try:  # a scheduled monitor running as an Azure ML job retrains in its own workspace by default
        client = workspace_client(settings.subscription_id, settings.resource_group, settings.workspace)
    except UserInputError as error:
        raise UserInputError(f"on_breach=retrain_aml: {error}") from None

    def submit_job(request: dict[str, Any]) -> dict[str, Any]:
        submitted = submit(client, aml_job(request["data"]), experiment_name=EXPERIMENT, stream=False)
        return {"status": "submitted", "run_id": submitted["name"], "detail": submitted["studio_url"]}

    return submit_job
