"""resolve_champion: the pointer's version with its model and reference bundle, or a record that there is
none; a reference the registry lost is a warning, never a crash; what clients sent, from the request log."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest

from mnist_mlops import contracts, references
from mnist_mlops.champions import TRAFFIC, read_champion
from mnist_mlops.components.resolve_champion.executor import run_resolve_champion
from mnist_mlops.data_shift import MIN_TRAFFIC_IMAGES
from mnist_mlops.deployments import request_log_dir
from mnist_mlops.errors import UserInputError
from mnist_mlops.hashing import content_sha256
from mnist_mlops.registry import client, experiment_id, set_pointer
from mnist_mlops.serving.request_log import RequestLog, log_state
from tests.datasets import small_splits
from tests.models import preprocessed_digits


class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input):
        return model_input


@pytest.fixture
def registry(tmp_path, monkeypatch) -> str:
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is relative to the working folder
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="module")
def trained_on(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A preprocessed folder (data_report.json beside it): the data the registered versions were
    trained on."""
    return preprocessed_digits(tmp_path_factory.mktemp("data"), small_splits())


def register(registry: str, name: str, *, trained_on: Path | None = None) -> str:
    """A version of a stand-in model; with `trained_on`, its reference bundle logged and tagged in the
    same run, as register does. Returns the version."""
    mlflow.set_tracking_uri(registry)
    with mlflow.start_run(experiment_id=experiment_id(registry, "resolve")) as run:
        logged = mlflow.pyfunc.log_model(
            name="model", python_model=Constant(), registered_model_name=name, pip_requirements=[]
        )
        if trained_on is not None:
            bundle = Path(registry.removeprefix("sqlite:///")).parent / "bundle"
            references.write_bundle(bundle, trained_on, trained_on.parent / "data_report.json")
            mlflow.log_artifacts(str(bundle), artifact_path=references.ARTIFACT_PATH)
            shutil.rmtree(bundle)
    version = str(logged.registered_model_version)
    if trained_on is not None:
        reference = f"runs:/{run.info.run_id}/{references.ARTIFACT_PATH}"
        client(registry).set_model_version_tag(name, version, references.TAG, reference)
    return version


def serve(folder: Path, images: int, *, status: int = 200, per_request: int = 10) -> None:
    """`images` images logged by a real RequestLog, in requests of `per_request`."""
    log = RequestLog(folder)
    rng = np.random.default_rng(images)
    for start in range(0, images, per_request):
        count = min(per_request, images - start)
        batch = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        probabilities = rng.dirichlet(np.ones(10), size=count)
        log.record(
            model_name="digits",
            model_version="1",
            status=status,
            started=time.perf_counter(),
            images=batch,
            probabilities=probabilities,
        )


def test_no_registry_yet_means_no_champion_and_creates_none(tmp_path, registry):
    record = run_resolve_champion(tmp_path / "champion", registry=registry)
    assert (record["found"], record["version"]) == (False, None)
    assert "names no version" in record["reason"]
    reference = record["reference"]
    assert not reference["found"] and reference["reason"].startswith("no production model")
    champion = read_champion(tmp_path / "champion")
    assert champion.record == record and champion.model is champion.reference is champion.traffic is None
    assert not (tmp_path / "mlflow.db").exists(), "resolving must not create a registry"


def test_the_pointer_names_the_champion_and_its_model_is_handed_on(tmp_path, registry, capsys):
    for _ in range(2):
        register(registry, "digits")
    assert run_resolve_champion(tmp_path / "none", model_name="digits", registry=registry)["found"] is False

    set_pointer(registry, "digits", "production", "1")
    capsys.readouterr()
    record = run_resolve_champion(tmp_path / "champion", model_name="digits", registry=registry)
    assert (record["found"], record["model_uri"]) == (True, "models:/digits/1")
    champion = read_champion(tmp_path / "champion")
    assert (champion.model / "MLmodel").is_file() and not (champion.model / "registered_model_meta").exists()
    assert record["reference"] == {
        "found": False,
        "uri": None,
        "dataset_version": None,
        "reason": "digits v1 was registered without a reference (no reference_uri tag)",
    }
    assert champion.reference is None
    assert "warning: digits v1 was registered without a reference" in capsys.readouterr().err

    challenger = run_resolve_champion(
        tmp_path / "other", model_name="digits", pointer="challenger", registry=registry
    )
    assert challenger["found"] is False


def test_the_champions_reference_is_fetched_from_the_registry(tmp_path, registry, trained_on):
    version = register(registry, "digits", trained_on=trained_on)
    set_pointer(registry, "digits", "production", version)
    record = run_resolve_champion(tmp_path / "champion", model_name="digits", registry=registry)
    dataset = contracts.read_json(trained_on / "manifest.json", "preprocessed_manifest")["dataset_version"]
    assert record["reference"]["found"] and record["reference"]["dataset_version"] == dataset
    assert record["reference"]["uri"].endswith("/reference")
    reference = read_champion(tmp_path / "champion").reference
    manifest, baseline = references.read_bundle(reference)
    assert manifest["dataset_version"] == dataset and "mean_image" in baseline
    assert [path.name for path in (tmp_path / "champion").iterdir() if path.name.startswith(".")] == []


def test_a_reference_whose_artifacts_are_gone_is_a_warning_not_a_crash(
    tmp_path, registry, trained_on, capsys
):
    version = register(registry, "digits", trained_on=trained_on)
    set_pointer(registry, "digits", "production", version)
    uri = client(registry).get_model_version("digits", version).tags[references.TAG]
    (bundle,) = (tmp_path / "mlartifacts").rglob(references.MANIFEST)
    shutil.rmtree(bundle.parent)

    capsys.readouterr()
    record = run_resolve_champion(tmp_path / "champion", model_name="digits", registry=registry)
    reference = record["reference"]
    assert record["found"] and not reference["found"] and reference["uri"] == uri
    assert f"digits v{version}" in reference["reason"] and uri in reference["reason"]
    assert f"warning: {reference['reason']}" in capsys.readouterr().err
    champion = read_champion(tmp_path / "champion")
    assert champion.reference is None and (champion.model / "MLmodel").is_file()
    assert not (tmp_path / "champion" / "reference").exists()


def test_recent_traffic_is_summarised_from_the_request_log(tmp_path, registry):
    folder = tmp_path / "requests"
    serve(folder, 150)
    serve(folder, 30, status=400, per_request=30)  # refused: not what the model was asked to answer
    record = run_resolve_champion(
        tmp_path / "champion", registry=registry, request_log=folder, traffic_window=120
    )
    traffic = record["traffic"]
    assert traffic["found"] and traffic["images"] == 120 and traffic["folder"] == str(folder)
    assert traffic["log_state"] == log_state(folder)
    assert traffic["reason"].startswith("120 images served between ")
    summary = read_champion(tmp_path / "champion").traffic
    assert (summary["images"], summary["requests"], summary["window"]) == (120, 12, 120)
    assert summary["time_range"]["from"] <= summary["time_range"]["to"]
    assert summary["time_range"]["to"].endswith("Z")

    again = run_resolve_champion(
        tmp_path / "again", registry=registry, request_log=folder, traffic_window=120
    )
    assert again == record
    assert content_sha256(tmp_path / "again") == content_sha256(tmp_path / "champion")


def test_too_little_or_no_traffic_is_said_so(tmp_path, registry):
    folder = tmp_path / "requests"
    serve(folder, 12)
    few = run_resolve_champion(tmp_path / "few", registry=registry, request_log=folder)["traffic"]
    assert (few["found"], few["images"]) == (False, 12)
    assert few["reason"] == f"only 12 images served recently at {folder}, fewer than {MIN_TRAFFIC_IMAGES}"
    assert not (tmp_path / "few" / TRAFFIC).exists()

    nobody_served = request_log_dir(registry, "digits")  # the default folder: absent until a server logs
    none = run_resolve_champion(tmp_path / "none", model_name="digits", registry=registry)["traffic"]
    assert (none["found"], none["folder"], none["reason"]) == (
        False,
        str(nobody_served),
        f"no request log at {nobody_served}",
    )


def test_a_request_log_given_but_absent_is_refused_naming_it(tmp_path, registry):
    missing = tmp_path / "typo-requests"
    with pytest.raises(UserInputError, match=f"request_log {missing}: no such folder"):
        run_resolve_champion(tmp_path / "champion", registry=registry, request_log=missing)
    assert not (tmp_path / "champion").exists()


def test_the_request_log_defaults_to_the_local_servers_folder_for_the_model(tmp_path, registry):
    serve(request_log_dir(registry, "digits"), MIN_TRAFFIC_IMAGES)
    record = run_resolve_champion(tmp_path / "champion", model_name="digits", registry=registry)
    assert record["traffic"]["found"] and record["traffic"]["folder"] == str(
        tmp_path / "deployments/requests/digits"
    )


def test_a_bad_parameter_is_refused_before_the_registry_is_read(tmp_path):
    with pytest.raises(UserInputError, match="parameter model_name"):
        run_resolve_champion(tmp_path / "champion", model_name=7)
    too_narrow = MIN_TRAFFIC_IMAGES - 1  # a window the traffic gate could never use
    with pytest.raises(
        UserInputError, match=f"parameter traffic_window={too_narrow}: below the minimum {MIN_TRAFFIC_IMAGES}"
    ):
        run_resolve_champion(tmp_path / "champion", traffic_window=too_narrow)
    assert not (tmp_path / "champion").exists()
