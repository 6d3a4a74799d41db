"""Each component's image builds from its own Dockerfile on a local base and runs the component with no
network and only its folders mounted: the image is self-contained.

Needs rootful podman (`../shared/containers/podman-here` installs it) and the local base image made
by `../shared/containers/make-base-image`; CI runs these. Set MNIST_MLOPS_SKIP_CONTAINER_TESTS=1 to
leave them out on a machine without podman.
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

from conftest import SHARED
from mnist_mlops import containers, contracts
from tests.datasets import make_tarball

BASE_IMAGE = "localhost/py311-base:bookworm"

pytestmark = [
    pytest.mark.container,
    pytest.mark.skipif(
        os.environ.get("MNIST_MLOPS_SKIP_CONTAINER_TESTS") == "1", reason="MNIST_MLOPS_SKIP_CONTAINER_TESTS=1"
    ),
]


@pytest.fixture(scope="module")
def base_image() -> str:
    helper = SHARED / "containers"
    if "MNIST_MLOPS_PODMAN" not in os.environ:
        os.environ["MNIST_MLOPS_PODMAN"] = str(helper / "podman-here")
    subprocess.run([str(helper / "make-base-image"), BASE_IMAGE], check=True)
    return BASE_IMAGE


@pytest.fixture(scope="module")
def images(base_image: str) -> dict[str, str]:
    return {name: containers.build_image(name, base_image=base_image) for name in ("ingest", "preprocess")}


def test_data_stages_run_inside_their_images_without_network(tmp_path, png_dataset, images):
    (tmp_path / "drop").mkdir()
    tarball = make_tarball(png_dataset, tmp_path / "drop" / "mnist.tar.gz")
    run = tmp_path / "run"
    ingest = containers.run_in_container(
        "ingest",
        images["ingest"],
        {"source_data": tarball.parent},
        {"dataset": run / "ingest" / "dataset", "data_report": run / "ingest" / "data_report.json"},
    )
    assert ingest.returncode == 0, ingest.stdout + ingest.stderr
    manifest = contracts.read_json(run / "ingest" / "dataset" / "manifest.json", "dataset_manifest")
    assert manifest["splits"]["training"]["count"] == 60

    preprocess = containers.run_in_container(
        "preprocess",
        images["preprocess"],
        {"dataset": run / "ingest" / "dataset"},
        {"preprocessed": run / "preprocess" / "preprocessed"},
    )
    assert preprocess.returncode == 0, preprocess.stdout + preprocess.stderr
    test_images = np.load(run / "preprocess" / "preprocessed" / "test" / "images.npy")
    assert test_images.shape == (30, 28, 28)


def test_container_has_no_network_and_fails_cleanly_on_bad_data(tmp_path, images):
    interfaces = subprocess.run(
        [*containers.podman(), "run", "--rm", "--network", "none", images["ingest"], "ls", "/sys/class/net"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert interfaces == ["lo"]
    (tmp_path / "empty").mkdir()
    result = containers.run_in_container(
        "ingest",
        images["ingest"],
        {"source_data": tmp_path / "empty"},
        {"dataset": tmp_path / "out" / "dataset", "data_report": tmp_path / "out" / "report.json"},
    )
    assert result.returncode == 2 and "no MNIST data found" in result.stderr
    assert not (tmp_path / "out" / "dataset").exists() and not (tmp_path / "out" / "report.json").exists()


def test_image_tag_is_content_addressed(base_image):
    assert containers.image_tag("ingest", base_image) == containers.image_tag("ingest", base_image)
    assert containers.image_tag("ingest", base_image) != containers.image_tag("train", base_image)
    assert containers.image_tag("train", base_image) == containers.image_tag("evaluate", base_image)
    assert containers.image_tag("ingest", base_image) != containers.image_tag("ingest", "other/base:1")


@pytest.fixture(scope="module")
def model_image(base_image: str) -> str:
    """train, evaluate, register and deploy share one environment, so one image (TensorFlow, MLflow,
    the Azure ML inference server)."""
    return containers.build_image("train", base_image=base_image)


def test_model_stages_run_inside_their_image_without_network(tmp_path, png_dataset, model_image):
    from mnist_mlops.components.ingest.executor import run_ingest
    from mnist_mlops.components.preprocess.executor import run_preprocess

    run_ingest(str(png_dataset), tmp_path / "dataset", tmp_path / "report.json")
    run_preprocess(tmp_path / "dataset", tmp_path / "preprocessed", validation_fraction=0.25)
    train = containers.run_in_container(
        "train",
        model_image,
        {"preprocessed": tmp_path / "preprocessed", "epochs": 2, "batch_size": 8},
        {
            "model": tmp_path / "train" / "model",
            "training_summary": tmp_path / "train" / "summary.json",
            "training_curves": tmp_path / "train" / "curves.png",
        },
    )
    assert train.returncode == 0, train.stdout + train.stderr
    summary = contracts.read_json(tmp_path / "train" / "summary.json", "training_summary")
    assert summary["hyperparameters"]["epochs"] == 2
    lenient = {"schema_version": 1, "min_accuracy": 0.0, "min_class_recall": 0.0, "max_regression": 1.0}
    (tmp_path / "thresholds.json").write_text(json.dumps(lenient | {"max_p99_latency_ms": 1000.0}))
    evaluate = containers.run_in_container(
        "evaluate",
        model_image,
        {
            "challenger": tmp_path / "train" / "model",
            "preprocessed": tmp_path / "preprocessed",
            "thresholds": tmp_path / "thresholds.json",
        },
        {
            "evaluation": tmp_path / "evaluate" / "evaluation",
            "blessing": tmp_path / "evaluate" / "blessing.json",
        },
    )
    assert evaluate.returncode == 0, evaluate.stdout + evaluate.stderr
    blessing = contracts.read_json(tmp_path / "evaluate" / "blessing.json", "blessing")
    assert blessing["first_run_without_champion"] is True
    assert (tmp_path / "evaluate" / "evaluation" / "model_card.md").is_file()

    (tmp_path / "registry").mkdir()
    register = containers.run_in_container(
        "register",
        model_image,
        {
            "model": tmp_path / "train" / "model",
            "blessing": tmp_path / "evaluate" / "blessing.json",
            "evaluation": tmp_path / "evaluate" / "evaluation",
            "training_summary": tmp_path / "train" / "summary.json",
            "data_report": tmp_path / "report.json",
            "preprocessed": tmp_path / "preprocessed",
            "registry": "sqlite:////mnt/registry/mlflow.db",
        },
        {"registration_record": tmp_path / "register" / "record.json"},
        services={"/mnt/registry": tmp_path / "registry"},
    )
    assert register.returncode == 0, register.stdout + register.stderr
    record = contracts.read_json(tmp_path / "register" / "record.json", "registration_record")
    assert blessing["blessed"] and record["registered"] and record["version"] == "1"
    assert (tmp_path / "registry" / "mlflow.db").is_file()

    deploy = containers.run_in_container(
        "deploy",
        model_image,
        {
            "model": "models:/mnist-mlops@challenger",
            "test_data": tmp_path / "preprocessed",
            "registry": "sqlite:////mnt/registry/mlflow.db",
            "canary_count": 8,
            "max_canary_p99_ms": 1000.0,
        },
        {"deployment_record": tmp_path / "deploy" / "record.json"},
        services={"/mnt/registry": tmp_path / "registry"},
    )
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    deployed = contracts.read_json(tmp_path / "deploy" / "record.json", "deployment_record")
    checks = deployed["infra_validation"]
    assert deployed["outcome"] == "deployed" and deployed["model_version"] == "1"
    assert checks["passed"] and checks["canary_correct"] == checks["canary_requests"] == 9
    assert checks["invalid_rejected"] == checks["invalid_requests"] > 20
    assert (tmp_path / "registry" / "deployments" / "mnist-mlops.jsonl").is_file()


def test_the_pipeline_runs_node_by_node_in_the_component_images(tmp_path, png_dataset, base_image):
    from mnist_mlops.cli import main

    runs = tmp_path / "runs"
    argv = ["run", "--data", str(png_dataset), "--runs-dir", str(runs), "--until", "preprocess"]
    argv += [
        "--isolation",
        "container",
        "--base-image",
        base_image,
        "--set",
        "preprocess.validation_fraction=0.25",
    ]
    assert main(argv) == 0
    (run_dir,) = [path for path in runs.iterdir() if path.name != ".cache"]
    record = contracts.read_json(run_dir / "run.json", "run_record")
    assert [(node["name"], node["status"]) for node in record["nodes"]] == [
        ("ingest", "done"),
        ("preprocess", "done"),
    ]
    manifest = json.loads((run_dir / "preprocess" / "preprocessed" / "manifest.json").read_text())
    assert manifest["validation_fraction"] == 0.25
    assert "/mnt/inputs/source_data" in (run_dir / "ingest" / "log.txt").read_text()
