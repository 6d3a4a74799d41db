"""What a breach triggers: a local training pipeline run, or an Azure ML pipeline job.

Either way the outcome goes into the report as it happened: a run that fails is recorded with its exit
code and the reason, and an AML job is recorded only with the name the service gave it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import PipelineJob

RUN_LINE = re.compile(r"run (?P<run_id>\S+) in (?P<run_dir>.+)")
"""The first line `mnist-mlops run` prints."""
EXPERIMENT = "mnist-mlops-retrain"
"""Retraining jobs get their own experiment, so the studio tells them from runs started by hand."""


def not_triggered(on_breach: str) -> dict[str, Any]:
    return {
        "on_breach": on_breach,
        "status": "not_triggered",
        "run_id": None,
        "exit_code": None,
        "command": None,
        "detail": None,
    }


def retrain_local(data: str, *, registry: str | None, until: str | None) -> dict[str, Any]:
    """Run the training pipeline (`mnist-mlops run`) in a child process in this working directory, so
    its runs land where a `mnist-mlops run` started here would put them; its output is passed through
    as it comes (training takes a while) and the run is waited for."""
    command = [sys.executable, "-m", "mnist_mlops.cli", "run", "--data", data]
    command += ["--registry", registry] if registry else []
    command += ["--until", until] if until else []
    print(f"retraining: {' '.join(command)}", flush=True)
    started, last = None, "the pipeline printed nothing"
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as child:
        for line in child.stdout:
            print(line, end="", flush=True)
            started = started or RUN_LINE.fullmatch(line.rstrip("\n"))
            last = line.strip() or last
    record = not_triggered("retrain_local") | {
        "status": "succeeded" if child.returncode == 0 else "failed",
        "run_id": started["run_id"] if started else None,
        "exit_code": child.returncode,
        "command": command,
        "detail": last,
    }
    run_record = Path(started["run_dir"]) / "run.json" if started else None
    if run_record is not None and run_record.is_file():
        record["detail"] = json.loads(run_record.read_text())["outcome"]
    return record


def aml_job(data: str | None) -> PipelineJob:
    """The training pipeline job on `data` (default: the pipeline's datastore path), validated offline the
    way `mnist-mlops submit` validates it."""
    from mnist_mlops.azure_jobs import validation_problems
    from mnist_mlops.errors import UserInputError
    from mnist_mlops.pipelines.aml import training_job

    job = training_job(data) if data else training_job()
    problems = validation_problems(job)
    if problems:
        raise UserInputError("the retraining pipeline job is invalid: " + "; ".join(problems))
    return job


def retrain_aml(client: MLClient, data: str | None) -> dict[str, Any]:
    """Submit the training pipeline job and return at once (a monitor does not wait hours for training)."""
    from mnist_mlops.azure_jobs import submit

    record = not_triggered("retrain_aml")
    try:
        submitted = submit(client, aml_job(data), experiment_name=EXPERIMENT, stream=False)
    except Exception as error:  # any refusal by the service is the retrain's outcome, reported as such
        first_line = (str(error).strip().splitlines() or [""])[0]
        return record | {"status": "failed", "detail": f"{type(error).__name__}: {first_line}"}
    return record | {"status": "submitted", "run_id": submitted["name"], "detail": submitted["studio_url"]}
