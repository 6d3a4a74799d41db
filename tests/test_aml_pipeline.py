"""The AML pipeline: six nodes wired like the local graph, its settings, the contract checks the SDK
lacks (ranges, enums, edge types and artifacts) and `compile --target aml`, all offline."""

from __future__ import annotations

import yaml
from azure.ai.ml import load_job

from mnist_mlops import artifacts
from mnist_mlops.azure_jobs import validation_problems
from mnist_mlops.cli import main
from mnist_mlops.pipelines import graph
from mnist_mlops.pipelines.aml import training_job
from mnist_mlops.ports import component_names, load_spec
from mnist_mlops.runner import is_artifact

NODE_OF_STAGE = {
    "ingest": "fetched",
    "preprocess": "prepared",
    "train": "trained",
    "evaluate": "judged",
    "register": "registered",
    "deploy": "deployed",
}


def test_the_aml_pipeline_is_the_local_graph_with_its_settings(tmp_path):
    job = training_job(identity_client_id="11111111-2222-3333-4444-555555555555", train_compute="gpu-a100")
    assert validation_problems(job) == []
    job.dump(tmp_path / "pipeline.yaml")
    document = yaml.safe_load((tmp_path / "pipeline.yaml").read_text())
    assert document["settings"] == {"default_compute": "azureml:cpu-cluster", "force_rerun": False}
    assert document["identity"] == {
        "type": "managed_identity",
        "client_id": "11111111-2222-3333-4444-555555555555",
    }
    assert document["jobs"]["trained"]["compute"] == "azureml:gpu-a100"

    edges = set()
    for node in graph.training_pipeline("data", None, None, "run"):
        for port, value in node.inputs.items():
            if isinstance(value, graph.Ref):
                edges.add((NODE_OF_STAGE[node.component], port, NODE_OF_STAGE[value.node], value.output))
    aml_edges = {
        (name, port, *binding["path"].removeprefix("${{parent.jobs.").removesuffix("}}").split(".outputs."))
        for name, node in document["jobs"].items()
        for port, binding in (node.get("inputs") or {}).items()
        if isinstance(binding, dict) and str(binding.get("path", "")).startswith("${{parent.jobs.")
    }
    assert aml_edges == edges  # the same graph, edge for edge
    reuse = {name: load_spec(stage)["is_deterministic"] for stage, name in NODE_OF_STAGE.items()}
    assert reuse == {name: name in ("prepared", "trained") for name in reuse}


def test_wrong_pipelines_fail_before_submission_naming_node_and_port():
    job = training_job()
    job.jobs["deployed"].inputs.registration_record = job.jobs["judged"].outputs.blessing
    job.jobs["trained"].inputs.epochs = 1000
    job.jobs["deployed"].inputs.target = "aws"
    problems = "\n".join(validation_problems(job))
    assert "jobs.deployed.inputs.registration_record: wired to judged.outputs.blessing" in problems
    assert "holding blessing, but it takes a uri_file holding registration_record" in problems
    assert "jobs.trained: mnist_mlops_train: parameter epochs=1000: above the maximum" in problems
    assert "parameter target='aws': must be one of local, azureml, kubernetes" in problems


def test_every_artifact_port_names_its_contract():
    for stage in component_names():
        spec = load_spec(stage)
        ports = [port for port, d in spec["inputs"].items() if is_artifact(d)] + list(spec["outputs"])
        for port in ports:
            assert artifacts.artifact_of(spec["name"], port), (stage, port)


def test_compile_writes_a_portable_pipeline_that_loads_back(tmp_path, capsys):
    assert main(["compile", "--target", "aml", "--out", str(tmp_path / "aml")]) == 0
    document = yaml.safe_load((tmp_path / "aml" / "pipeline.yml").read_text())
    assert {node["component"] for node in document["jobs"].values()} == {
        f"./components/{stage}/spec.yaml" for stage in NODE_OF_STAGE
    }
    assert "/work/" not in (tmp_path / "aml" / "pipeline.yml").read_text()
    assert not (tmp_path / "aml" / "components" / "train" / "tests").exists()
    loaded = load_job(tmp_path / "aml" / "pipeline.yml")
    assert loaded._validate().passed and set(loaded.jobs) == set(NODE_OF_STAGE.values())
