"""The components compose into an AML pipeline job that validates and serializes offline."""

from __future__ import annotations

import yaml
from azure.ai.ml import Input

from mnist_mlops.pipelines.aml import training_pipeline


def test_training_pipeline_builds_validates_and_dumps(tmp_path):
    job = training_pipeline(
        raw_data=Input(type="uri_folder", path="azureml://datastores/workspaceblobstore/paths/mnist/")
    )
    job.settings.default_compute = "cpu-cluster"
    result = job._validate()
    assert result.passed, result.error_messages
    job.dump(tmp_path / "pipeline.yaml")
    jobs = yaml.safe_load((tmp_path / "pipeline.yaml").read_text())["jobs"]
    assert set(jobs) == {"fetched", "prepared", "trained", "judged", "registered"}
    assert jobs["registered"]["inputs"]["blessing"]["path"] == "${{parent.jobs.judged.outputs.blessing}}"
    assert jobs["prepared"]["inputs"]["dataset"]["path"] == "${{parent.jobs.fetched.outputs.dataset}}"
    assert jobs["judged"]["inputs"]["challenger"]["path"] == "${{parent.jobs.trained.outputs.model}}"
    assert (
        jobs["judged"]["inputs"]["preprocessed"]["path"] == "${{parent.jobs.prepared.outputs.preprocessed}}"
    )
