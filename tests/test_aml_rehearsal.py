"""A rehearsal of Azure ML, offline: the compiled training pipeline run node by node the way the service
runs a pipeline job.

What Azure ML does with each node, and what this does in its place:
- uploads the spec's `code` folder by azure-ai-ml's own ignore rules: `snapshot_files` (the SDK's
  `ComponentIgnoreFile` and upload walk) over the compiled folder, materialized and mounted read-only as
  the working directory;
- uploads the environment's build folder as it is and builds it with no build args:
  `containers.build_image` over the compiled folder's environment, on the stand-in for its public base
  (same distribution and Python, tagged under the base's own name);
- runs the spec's `command` with its inputs mounted read-only, a fresh folder per output, and the
  variables Azure ML sets (`AZUREML_RUN_ID`, `MLFLOW_TRACKING_URI`, `MLFLOW_RUN_ID`, ...). Tracking and
  the registry are a real `mlflow server` (what Azure ML's MLflow is: a remote tracking server) in a
  container of its own whose network namespace has only loopback; each node joins that namespace, so
  it reaches the tracking server and nothing else. Beside it in that namespace, `tests/azure_standin.py`
  answers for Azure Resource Manager and the compute's token endpoint, so ingest registers its dataset
  as a data asset through the real `MLClient` with the job's user-assigned identity.

The pipeline runs twice on the same registry: the second run's resolve_champion node finds the first
run's deployed model, and evaluate judges the new challenger against it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from azure.ai.ml import Input

from conftest import REPO, self_signed_certificate
from mnist_mlops import containers, contracts
from mnist_mlops.data_assets import CONTENT_TAG, asset_version
from mnist_mlops.pipelines.aml import DATASET_ASSET, compile_aml, training_job
from mnist_mlops.provenance import code_version
from mnist_mlops.runner import NODE_OUTPUT, PARENT_INPUT, is_artifact
from mnist_mlops.snapshot import materialize, snapshot_files
from tests import azure_standin, models
from tests.datasets import make_tarball, small_splits, write_png_tree

pytestmark = [
    pytest.mark.aml_rehearsal,
    pytest.mark.container,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("MNIST_MLOPS_SKIP_CONTAINER_TESTS") == "1", reason="MNIST_MLOPS_SKIP_CONTAINER_TESTS=1"
    ),
]
TRACKING = "http://127.0.0.1:5000"
AZURE_PORT = 5001
AZURE_FOLDER = "/azure"
"""Where the stand-in's script and TLS certificate are mounted, in the tracking container and every node."""
LENIENT = models.LENIENT | {"min_accuracy": 0.2}
WORKSPACE = {
    "AZUREML_ARM_SUBSCRIPTION": "00000000-0000-0000-0000-000000000000",
    "AZUREML_ARM_RESOURCEGROUP": "rehearsal-rg",
    "AZUREML_ARM_WORKSPACE_NAME": "rehearsal-ws",
} | azure_standin.job_environment(AZURE_PORT, f"{AZURE_FOLDER}/cert.pem")


@pytest.fixture(scope="module")
def azure_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Azure stand-in's script and its TLS certificate, mounted at AZURE_FOLDER."""
    folder = tmp_path_factory.mktemp("azure")
    self_signed_certificate(folder)
    shutil.copy(REPO / "tests" / "azure_standin.py", folder / "azure_standin.py")
    return folder


@pytest.fixture(scope="module")
def tracking_server(podman_images: str, azure_folder: Path, tmp_path_factory: pytest.TempPathFactory):
    """`mlflow server` on loopback inside a network namespace that has nothing else but the Azure stand-in;
    yields its name."""
    store = tmp_path_factory.mktemp("mlflow-server")
    model_image = containers.build_image(containers.environment_of("train"))
    name = f"mnist-mlops-tracking-{uuid.uuid4().hex[:8]}"
    command = ["mlflow", "server", "--host", "127.0.0.1", "--port", "5000"]
    command += [
        "--backend-store-uri",
        "sqlite:////mlflow/mlflow.db",
        "--artifacts-destination",
        "/mlflow/artifacts",
    ]
    subprocess.run(
        [
            *containers.podman(),
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "none",
            "-v",
            f"{store}:/mlflow",
            "-v",
            f"{azure_folder}:{AZURE_FOLDER}:ro",
            model_image,
            *command,
        ],
        check=True,
        capture_output=True,
    )
    standin = f"{AZURE_FOLDER}/azure_standin.py {AZURE_FOLDER}/cert.pem {AZURE_FOLDER}/key.pem {AZURE_PORT}"
    subprocess.run([*containers.podman(), "exec", "-d", name, "sh", "-c", f"python {standin}"], check=True)
    try:
        deadline = time.monotonic() + 120
        while _in_server(
            name, f"import urllib.request; urllib.request.urlopen('{TRACKING}/health')"
        ).returncode:
            assert time.monotonic() < deadline, "the mlflow server did not start"
            time.sleep(2)
        yield name
    finally:
        subprocess.run([*containers.podman(), "rm", "-f", name], check=False, capture_output=True)


def _in_server(name: str, code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*containers.podman(), "exec", name, "python", "-c", code],
        capture_output=True,
        text=True,
        check=False,
    )


def _job_run(server: str, experiment: str) -> str:
    """The MLflow run Azure ML creates for a job before its command starts."""
    result = _in_server(
        server,
        "import mlflow; mlflow.set_tracking_uri('http://127.0.0.1:5000'); "
        f"c = mlflow.MlflowClient(); e = c.get_experiment_by_name('{experiment}'); "
        f"i = e.experiment_id if e else c.create_experiment('{experiment}'); "
        "print(c.create_run(i).info.run_id)",
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()[-1]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`compile --target aml`'s folder for the training pipeline, sized for a rehearsal: a small
    training, lenient KPI thresholds, deploy to the local target (no workspace here)."""
    root = tmp_path_factory.mktemp("compiled")
    (root / "kpis.json").write_text(json.dumps(LENIENT))
    job = training_job(deploy_target="local", epochs=6)
    job.jobs["train"].inputs.batch_size = 16
    job.jobs["preprocess"].inputs.validation_fraction = 0.25
    job.jobs["evaluate"].inputs.thresholds = Input(type="uri_file", path=str(root / "kpis.json"))
    job.jobs["deploy"].inputs.canary_count = 8
    job.jobs["deploy"].inputs.max_canary_p99_ms = 1000.0
    return compile_aml(root / "pipeline", job).parent


def run_pipeline(
    compiled: Path, raw_data: Path, run_dir: Path, server: str, azure_folder: Path
) -> dict[str, dict[str, Path]]:
    """Run every node of the compiled pipeline in order; returns each node's outputs."""
    document = yaml.safe_load((compiled / "pipeline.yml").read_text())
    pipeline_inputs = {name: value for name, value in (document.get("inputs") or {}).items()}
    pipeline_inputs["raw_data"] = str(raw_data)
    pipeline_run = f"rehearsal-{uuid.uuid4().hex[:8]}"
    outputs: dict[str, dict[str, Path]] = {}
    for node_name, node in document["jobs"].items():
        spec_path = compiled / node["component"]
        spec = yaml.safe_load(spec_path.read_text())
        snapshot = materialize_snapshot(spec_path, spec, run_dir / node_name / "snapshot")
        tag = containers.build_image((spec_path.parent / spec["environment"]["build"]["path"]).resolve())
        inputs = {
            port: bind(value, pipeline_inputs, outputs, compiled)
            for port, value in (node.get("inputs") or {}).items()
        }
        inputs = {port: value for port, value in inputs.items() if value is not None}
        outputs[node_name] = {
            port: run_dir / node_name / (f"{port}.json" if definition["type"] == "uri_file" else port)
            for port, definition in spec["outputs"].items()
        }
        run_id = _job_run(server, pipeline_run)
        environment = (
            WORKSPACE
            | {
                "AZUREML_RUN_ID": run_id,
                "AZUREML_ROOT_RUN_ID": pipeline_run,
                "MLFLOW_TRACKING_URI": TRACKING,
                "MLFLOW_RUN_ID": run_id,
                "MLFLOW_EXPERIMENT_NAME": pipeline_run,
            }
            | (node.get("environment_variables") or {})
        )
        result = containers.run_in_container(
            spec["name"].removeprefix("mnist_mlops_"),
            tag,
            inputs,
            outputs[node_name],
            network=f"container:{server}",
            services={AZURE_FOLDER: azure_folder},
            environment=environment,
            snapshot=snapshot,
            spec_path=spec_path,
        )
        assert result.returncode == 0, f"{node_name}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        for port, definition in spec["outputs"].items():
            assert outputs[node_name][port].exists(), f"{node_name}.{port} was not written"
            assert is_artifact(definition)
    return outputs


def _data_asset(server: str, version: str) -> dict:
    """The properties of data asset version `version` as the Azure stand-in holds them."""
    workspace = (
        f"/subscriptions/{WORKSPACE['AZUREML_ARM_SUBSCRIPTION']}/resourceGroups/{WORKSPACE['AZUREML_ARM_RESOURCEGROUP']}"
        f"/providers/Microsoft.MachineLearningServices/workspaces/{WORKSPACE['AZUREML_ARM_WORKSPACE_NAME']}"
    )
    url = f"https://127.0.0.1:{AZURE_PORT}{workspace}/data/{DATASET_ASSET}/versions/{version}"
    result = _in_server(
        server,
        "import json, ssl, urllib.request; "
        f"context = ssl.create_default_context(cafile='{AZURE_FOLDER}/cert.pem'); "
        f"request = urllib.request.Request('{url}', headers={{'Authorization': 'Bearer rehearsal'}}); "
        "print(json.dumps(json.load(urllib.request.urlopen(request, context=context))['properties']))",
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def materialize_snapshot(spec_path: Path, spec: dict, destination: Path) -> Path:
    """What azure-ai-ml uploads for the spec's `code`, by its own rules."""
    code_root = (spec_path.parent / spec["code"]).resolve()
    files = snapshot_files(code_root)
    assert "mnist_mlops/__init__.py" in files and not any("/tests/" in name for name in files)
    return materialize(destination, code_root)


def bind(value: Any, pipeline_inputs: dict, outputs: dict, compiled: Path) -> Any:
    """A node input as the job sees it: a literal, a pipeline input, or another node's output path."""
    if isinstance(value, dict):
        text = str(value.get("path", ""))
        if edge := NODE_OUTPUT.fullmatch(text):
            return outputs[edge["node"]][edge["port"]]
        if parent := PARENT_INPUT.fullmatch(text):
            bound = pipeline_inputs.get(parent["name"])
            return bound.get("path") if isinstance(bound, dict) else bound
        return (compiled / text).resolve() if not Path(text).is_absolute() else Path(text)
    return value


def test_the_compiled_pipeline_runs_node_by_node_as_on_azure_ml_and_finds_its_champion(
    tmp_path, compiled, tracking_server, azure_folder
):
    drop = tmp_path / "raw"
    drop.mkdir()
    source = write_png_tree(tmp_path / "src", small_splits(train_per_class=12, test_per_class=4))
    make_tarball(source, drop / "mnist.tar.gz")

    first = run_pipeline(compiled, drop, tmp_path / "run-1", tracking_server, azure_folder)
    assert list(first) == [
        "ingest",
        "preprocess",
        "resolve_champion",
        "train",
        "evaluate",
        "register",
        "deploy",
    ]
    none = contracts.read_json(first["resolve_champion"]["champion"] / "champion.json", "champion_record")
    assert none["found"] is False and none["registry_uri"] == TRACKING
    registered = contracts.read_json(first["register"]["registration_record"], "registration_record")
    assert registered["registered"] and registered["version"] == "1"
    assert registered["lineage"]["pipeline_run_id"].startswith("rehearsal-")
    summary = json.loads(first["train"]["training_summary"].read_text())
    assert summary["code_version"] == code_version(), "the commit stamped on the node at submission"
    deployed = contracts.read_json(first["deploy"]["deployment_record"], "deployment_record")
    assert deployed["outcome"] == "deployed" and deployed["model_version"] == "1"
    manifest = contracts.read_json(first["ingest"]["dataset"] / "manifest.json", "dataset_manifest")
    asset = _data_asset(tracking_server, asset_version(manifest["dataset_version"]))
    assert asset["tags"][CONTENT_TAG] == manifest["dataset_version"]
    assert asset["dataUri"].startswith("azureml://jobs/") and asset["dataUri"].endswith("/outputs/dataset")

    second = run_pipeline(compiled, drop, tmp_path / "run-2", tracking_server, azure_folder)
    champion = contracts.read_json(
        second["resolve_champion"]["champion"] / "champion.json", "champion_record"
    )
    assert (champion["found"], champion["model_uri"]) == (True, "models:/mnist-mlops/1")
    report = contracts.read_json(
        second["evaluate"]["evaluation"] / "evaluation_report.json", "evaluation_report"
    )
    assert report["champion"]["version"] == "1"
    regression = next(gate for gate in report["thresholds"] if gate["name"] == "max_regression")
    assert "champion mnist-mlops v1" in regression["reason"]
    again = contracts.read_json(second["deploy"]["deployment_record"], "deployment_record")
    assert (again["model_version"], again["previous_version"]) == ("2", "1")
    # the same data: the first run's asset version stands, still pointing at the first run's output
    assert _data_asset(tracking_server, asset_version(manifest["dataset_version"])) == asset

    history = _in_server(
        tracking_server,
        "import mlflow; c = mlflow.MlflowClient('http://127.0.0.1:5000'); "
        "tags = [t for v in c.search_model_versions(\"name='mnist-mlops'\") for t in v.tags "
        "if t.startswith('deployment.')]; "
        "print(len(tags), c.get_model_version_by_alias('mnist-mlops', 'production').version)",
    )
    assert history.stdout.split() == ["2", "2"], history.stderr
