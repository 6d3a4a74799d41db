"""register: only blessed models, lineage tags and the data-shift decision, the reference bundle, verified
before ready, concurrent and failed registrations."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_mlops import contracts, references
from mnist_mlops.components.register.executor import run_register
from mnist_mlops.errors import UserInputError
from mnist_mlops.registry import JUDGEMENT_TAG, READY_TAG, client
from tests.models import LENIENT, judge, judged_model, register_model

pytestmark = pytest.mark.slow  # trains models or starts servers

IMPOSSIBLE = LENIENT | {"min_accuracy": 1.0, "min_class_recall": 1.0}


@pytest.fixture(scope="module")
def pipeline_outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny model, blessed by lenient thresholds (its verdict in `root`) and declined by impossible
    ones (its verdict in `root`/declined)."""
    root = judged_model(
        tmp_path_factory.mktemp("register"), LENIENT, train_per_class=24, test_per_class=6, epochs=8
    )
    return {"root": root, "blessed": root, "declined": judge(root, IMPOSSIBLE, root / "declined")}


def register(outputs: dict, verdict: str, record: Path, registry: str, **options) -> dict:
    return register_model(outputs["root"], registry, record, verdict=outputs[verdict], **options)


def test_a_blessed_model_is_registered_verified_and_aliased(tmp_path, pipeline_outputs):
    import mlflow.pyfunc

    registry = f"sqlite:///{tmp_path / 'mlflow.db'}"
    record = register(
        pipeline_outputs, "blessed", tmp_path / "record.json", registry, pipeline_run_id="run-7"
    )
    assert contracts.read_json(tmp_path / "record.json", "registration_record") == record
    assert record["registered"] is True and record["version"] == "1" and record["aliases"] == ["challenger"]
    version = client(registry).get_model_version_by_alias("mnist-mlops", "challenger")
    assert str(version.version) == "1" and version.tags[READY_TAG] == "ready"
    assert version.tags["pipeline_run_id"] == "run-7"
    assert version.tags["dataset_version"] == record["lineage"]["dataset_version"]
    assert (version.tags["image_shape"], version.tags["classes"]) == (
        "28x28 grayscale",
        "0, 1, 2, 3, 4, 5, 6, 7, 8, 9",
    )
    assert set(record["lineage"]["component_versions"]) == {
        "ingest",
        "preprocess",
        "train",
        "evaluate",
        "register",
    }
    mlflow.set_tracking_uri(registry)
    model = mlflow.pyfunc.load_model("models:/mnist-mlops@challenger")
    assert model.metadata.signature.inputs.inputs[0].shape == (-1, 28, 28)


def test_the_version_keeps_its_reference_and_its_judgement_in_the_registry(tmp_path, pipeline_outputs):
    import mlflow.artifacts

    registry = f"sqlite:///{tmp_path / 'mlflow.db'}"
    record = register(pipeline_outputs, "blessed", tmp_path / "record.json", registry)
    version = client(registry).get_model_version("mnist-mlops", record["version"])
    assert version.tags[references.TAG] == f"runs:/{version.run_id}/{references.ARTIFACT_PATH}"

    fetched = references.fetch(registry, "mnist-mlops", record["version"], tmp_path / "reference")
    assert fetched["found"] and fetched["uri"] == version.tags[references.TAG]
    assert fetched["dataset_version"] == record["lineage"]["dataset_version"]
    judgement = version.tags[JUDGEMENT_TAG]
    assert judgement == f"runs:/{version.run_id}/evaluation"
    judged = Path(
        mlflow.artifacts.download_artifacts(judgement, tracking_uri=registry, dst_path=str(tmp_path / "j"))
    )
    assert sorted(path.name for path in judged.iterdir()) == [
        "blessing.json",
        "evaluation_report.json",
        "model_card.md",
    ]
    assert (judged / "model_card.md").read_text() == (
        pipeline_outputs["blessed"] / "evaluation" / "model_card.md"
    ).read_text()
    manifest, baseline = references.read_bundle(tmp_path / "reference")
    preprocessed = pipeline_outputs["root"] / "preprocessed"
    trained_on = contracts.read_json(preprocessed / "manifest.json", "preprocessed_manifest")
    assert baseline == contracts.read_json(
        preprocessed / trained_on["baseline_statistics"]["path"], "baseline_statistics"
    )
    images, labels = references.test_split(tmp_path / "reference")
    assert len(images) == len(labels) == manifest["splits"]["test"]["count"] == 60


def shift_tags(registry: str, version: str) -> tuple[str, str, str]:
    tags = client(registry).get_model_version("mnist-mlops", version).tags
    return tags["data_shift"], tags["data_shift.reference_version"], tags["data_shift.reference_dataset"]


def test_the_data_shift_decision_goes_to_the_lineage_and_the_tags(tmp_path, pipeline_outputs):
    registry = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = register(pipeline_outputs, "blessed", tmp_path / "first.json", registry)
    shift = {"decision": "no_reference", "reference_model_version": None, "reference_dataset_version": None}
    assert first["lineage"]["data_shift"] == shift  # judged with no champion
    assert shift_tags(registry, first["version"]) == ("no_reference", "-", "-")

    accepted = tmp_path / "accepted"
    shutil.copytree(pipeline_outputs["blessed"] / "evaluation", accepted / "evaluation")
    blessing = json.loads((pipeline_outputs["blessed"] / "blessing.json").read_text())
    blessing["data_shift"] = {
        "decision": "accepted",
        "accepted": True,
        "reference_model_version": first["version"],
        "reference_dataset_version": "d" * 64,
        "reasons": ["max_data_shift: accepted: mean_intensity PSI 15.9 > 0.2 (mean 33.3 -> 190.2)"],
    }
    contracts.write_json(accepted / "blessing.json", blessing, "blessing")
    second = register_model(pipeline_outputs["root"], registry, tmp_path / "second.json", verdict=accepted)
    assert second["lineage"]["data_shift"] == {
        "decision": "accepted",
        "reference_model_version": first["version"],
        "reference_dataset_version": "d" * 64,
    }
    assert shift_tags(registry, second["version"]) == ("accepted", first["version"], "d" * 64)


def test_models_lists_versions_with_alias_status_and_metrics(tmp_path, pipeline_outputs, capsys):
    from mnist_mlops.cli import main

    registry = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["models", "--registry", registry]) == 2
    register(pipeline_outputs, "blessed", tmp_path / "record.json", registry)
    capsys.readouterr()
    assert main(["models", "--registry", registry]) == 0
    header, row = capsys.readouterr().out.strip().splitlines()
    columns = ["version", "aliases", "status", "accuracy", "p99_ms", "dataset", "shift", "run"]
    assert header.split() == columns
    listed = dict(zip(columns, row.split(), strict=True))
    assert (listed["version"], listed["aliases"], listed["status"]) == ("1", "challenger", "ready")
    assert listed["shift"] == "no_reference"

    assert main(["models", "--registry", registry, "--card", "1"]) == 0
    card = capsys.readouterr().out
    assert card.startswith((pipeline_outputs["blessed"] / "evaluation" / "model_card.md").read_text())
    blessing = json.loads((pipeline_outputs["blessed"] / "blessing.json").read_text())
    assert f"  - {blessing['reasons'][0]}" in card and "/evaluation/blessing.json): blessed" in card
    assert main(["models", "--registry", registry, "--card", "7"]) == 2
    assert "mnist-mlops version 7: not in" in capsys.readouterr().err


def test_an_unblessed_model_is_declined_with_the_gates_reasons(tmp_path, pipeline_outputs):
    registry = f"sqlite:///{tmp_path / 'mlflow.db'}"
    record = register(pipeline_outputs, "declined", tmp_path / "record.json", registry)
    assert record["registered"] is False and record["version"] is None
    assert record["reasons"][0] == "not registered: the model was not blessed"
    assert any("min_accuracy" in reason or "accuracy" in reason for reason in record["reasons"][1:])
    assert not (tmp_path / "mlflow.db").exists()


def test_a_blessing_for_another_report_is_refused(tmp_path, pipeline_outputs):
    root = pipeline_outputs["root"]
    with pytest.raises(UserInputError, match="another evaluation report"):
        run_register(
            root / "model",
            pipeline_outputs["declined"] / "blessing.json",
            pipeline_outputs["blessed"] / "evaluation",
            root / "summary.json",
            root / "data_report.json",
            root / "preprocessed",
            tmp_path / "r.json",
            registry=f"sqlite:///{tmp_path / 'mlflow.db'}",
        )
    assert not (tmp_path / "r.json").exists()


def test_a_failed_verification_leaves_no_version(tmp_path, pipeline_outputs, monkeypatch):
    import mlflow.pyfunc

    registry = f"sqlite:///{tmp_path / 'mlflow.db'}"
    real_load = mlflow.pyfunc.load_model

    def broken_registry_copy(uri, *args, **kwargs):
        if str(uri).startswith("models:/"):
            raise OSError("simulated: the registered artifact cannot be read")
        return real_load(uri, *args, **kwargs)

    monkeypatch.setattr(mlflow.pyfunc, "load_model", broken_registry_copy)
    with pytest.raises(OSError, match="simulated"):
        register(pipeline_outputs, "blessed", tmp_path / "record.json", registry)
    assert client(registry).search_model_versions("name='mnist-mlops'") == []
    assert not (tmp_path / "record.json").exists()


def test_an_export_that_fails_its_golden_check_leaves_no_version(tmp_path, pipeline_outputs, monkeypatch):
    from mnist_mlops import onnx_export

    real_session = onnx_export._session_predict

    def other_classes(data: bytes, **options: object):
        predict = real_session(data, **options)
        return lambda images: predict(images)[:, ::-1]

    monkeypatch.setattr(onnx_export, "_session_predict", other_classes)
    registry = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(UserInputError, match="the ONNX export predicts differently"):
        register(pipeline_outputs, "blessed", tmp_path / "record.json", registry)
    assert client(registry).search_model_versions("name='mnist-mlops'") == []
    assert not (tmp_path / "record.json").exists()


def test_two_registrations_at_once_get_two_intact_versions(tmp_path, pipeline_outputs):
    registry = f"sqlite:///{tmp_path / 'mlflow.db'}"
    root = pipeline_outputs["root"]
    code = (
        "import sys; from pathlib import Path; "
        "from mnist_mlops.components.register.executor import run_register; "
        f"root = Path({str(root)!r}); "
        "run_register(root / 'model', root / 'blessing.json', root / 'evaluation', "
        "root / 'summary.json', root / 'data_report.json', root / 'preprocessed', Path(sys.argv[1]), "
        f"registry={registry!r})"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path / f"record{index}.json")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for index in range(2)
    ]
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    versions = {json.loads((tmp_path / f"record{index}.json").read_text())["version"] for index in range(2)}
    assert versions == {"1", "2"}
    for version in client(registry).search_model_versions("name='mnist-mlops'"):
        assert version.tags[READY_TAG] == "ready"
