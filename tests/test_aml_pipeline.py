"""The AML pipeline: the graph rendered node for node, its settings, the contract checks the SDK
lacks (ranges, enums, edge types and artifacts) and `compile --target aml`, all offline."""

from __future__ import annotations

import yaml
from azure.ai.ml import load_job

from mnist_mlops import artifacts
from mnist_mlops.azure_jobs import validation_problems
from mnist_mlops.cli import main
from mnist_mlops.pipelines.aml import DATASET_ASSET, aml_graph, training_job
from mnist_mlops.pipelines.graph import Param, Ref
from mnist_mlops.pipelines.graph import training_pipeline as training_graph
from mnist_mlops.ports import component_names, load_spec
from mnist_mlops.runner import is_artifact

STAGES = [node.component for node in training_graph({"source_uri": "data"})]


def test_the_aml_pipeline_renders_the_graph_node_for_node_with_its_settings(tmp_path):
    job = training_job(
        identity_client_id="11111111-2222-3333-4444-555555555555",
        train_compute="cpu-large",
        train_instance_count=2,
        train_workers_per_instance=2,
    )
    assert validation_problems(job) == []
    job.dump(tmp_path / "pipeline.yaml")
    document = yaml.safe_load((tmp_path / "pipeline.yaml").read_text())
    assert document["settings"] == {"default_compute": "azureml:cpu-cluster", "force_rerun": False}
    assert document["identity"] == {
        "type": "managed_identity",
        "client_id": "11111111-2222-3333-4444-555555555555",
    }
    train = document["jobs"]["train"]
    assert train["compute"] == "azureml:cpu-large"
    assert train["resources"]["instance_count"] == 2
    assert train["distribution"] == {"type": "tensorflow", "worker_count": 4, "parameter_server_count": 0}
    assert document["inputs"]["dataset_asset"] == DATASET_ASSET  # ingest registers it, by content
    assert "dataset" not in document["jobs"]["ingest"]["outputs"]  # no second, service-side registration

    graph_nodes = aml_graph()
    assert list(job.jobs) == [node.name for node in graph_nodes]  # in execution order
    for node in graph_nodes:
        bindings = document["jobs"][node.name].get("inputs") or {}
        for port, value in node.inputs.items():
            if isinstance(value, Ref):
                assert bindings[port]["path"] == f"${{{{parent.jobs.{value.node}.outputs.{value.output}}}}}"
            elif isinstance(value, Param):
                assert bindings[port]["path"] == f"${{{{parent.inputs.{value.name}}}}}", (node.name, port)
    assert document["inputs"]["deploy_target"] == "azureml"  # the cloud target unless told otherwise
    reuse = {name: document["jobs"][name]["component"]["is_deterministic"] for name in document["jobs"]}
    assert reuse == {name: name in ("preprocess", "train") for name in reuse}


def test_train_defaults_to_the_default_compute_on_one_cpu_node():
    document = training_job()._to_dict()
    assert document["jobs"]["train"].get("compute") == "azureml:cpu-cluster"
    assert "distribution" not in document["jobs"]["train"]


def test_wrong_pipelines_fail_before_submission_naming_node_and_port():
    job = training_job()
    job.jobs["deploy"].inputs.registration_record = job.jobs["evaluate"].outputs.blessing
    job.jobs["train"].inputs.epochs = 1000
    job.jobs["deploy"].inputs.target = "aws"
    problems = "\n".join(validation_problems(job))
    assert "jobs.deploy.inputs.registration_record: wired to evaluate.outputs.blessing" in problems
    assert "holding blessing, but it takes a uri_file holding registration_record" in problems
    assert "jobs.train: mnist_mlops_train: parameter epochs=1000: above the maximum" in problems
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
        f"./components/{stage}/spec.yaml" for stage in STAGES
    }
    assert "/work/" not in (tmp_path / "aml" / "pipeline.yml").read_text()
    assert not (tmp_path / "aml" / "components" / "train" / "tests").exists()
    assert (tmp_path / "aml" / "mnist_mlops" / "serving" / "score.py").is_file()  # the code snapshot
    assert (tmp_path / "aml" / "components" / "environments" / "model" / "Dockerfile").is_file()
    assert document["inputs"]["accept_data_shift"] is False  # a boolean, not the SDK's 0
    loaded = load_job(tmp_path / "aml" / "pipeline.yml")
    assert loaded._validate().passed and list(loaded.jobs) == STAGES


def test_the_data_asset_is_a_submission_choice_and_none_registers_none():
    from mnist_mlops.cli import build_parser

    named = training_job(dataset_asset="team-mnist")._to_dict()
    assert named["inputs"]["dataset_asset"] == "team-mnist"
    assert named["jobs"]["ingest"]["inputs"]["asset_name"]["path"] == "${{parent.inputs.dataset_asset}}"
    none = training_job(dataset_asset=None)._to_dict()
    assert "dataset_asset" not in none["inputs"] and "asset_name" not in none["jobs"]["ingest"]["inputs"]
    assert build_parser().parse_args(["submit"]).dataset_asset == DATASET_ASSET
    assert build_parser().parse_args(["submit", "--dataset-asset", "none"]).dataset_asset == "none"


def test_accepting_a_data_shift_is_a_pipeline_input_set_at_submission_never_by_default():
    from mnist_mlops.cli import build_parser

    default = training_job()
    assert default.inputs["accept_data_shift"]._data is False
    binding = default._to_dict()["jobs"]["evaluate"]["inputs"]["accept_data_shift"]["path"]
    assert binding == "${{parent.inputs.accept_data_shift}}"
    assert training_job(accept_data_shift=True).inputs["accept_data_shift"]._data is True
    assert build_parser().parse_args(["submit"]).accept_data_shift is False
    assert build_parser().parse_args(["submit", "--accept-data-shift"]).accept_data_shift is True
