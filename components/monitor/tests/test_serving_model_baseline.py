"""monitor without a baseline folder: the serving model's own training data, found through the registry,
and, after a data shift accepted at evaluate, whether clients moved with the data.

A real SQLite MLflow registry holds versions as register leaves them: a run with the reference bundle of
real preprocessed digits (original, or from a changed source with another intensity response), and the
version tags `reference_uri` and `data_shift*`. The request logs are written by the server's own
`RequestLog` from real images (the predictions are made up: no model is needed to tell what was sent).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from mnist_mlops import contracts, references
from mnist_mlops.components.monitor.executor import run_monitor
from mnist_mlops.errors import UserInputError
from mnist_mlops.registry import SHIFT_REFERENCE_VERSION_TAG, SHIFT_TAG, client, experiment_id
from mnist_mlops.serving.request_log import RequestLog
from tests.datasets import digit_images, small_splits
from tests.models import preprocessed_digits

MODEL = "mnist-mlops"


def changed_source(images: np.ndarray) -> np.ndarray:
    """The same digits from a source with another intensity response: low contrast on grey."""
    return ((images * 0.4) + 120).astype(np.uint8)


def noisy(images: np.ndarray) -> np.ndarray:
    """Like neither: strong uniform noise over the original digits."""
    noise = np.random.default_rng(7).integers(0, 120, images.shape)
    return np.clip(images.astype(np.int64) + noise, 0, 255).astype(np.uint8)


def register(uri: str, preprocessed: Path, scratch: Path, tags: dict[str, str]) -> tuple[str, str]:
    """A version registered as register does it: the reference bundle of `preprocessed` logged in the
    version's run and named by its `reference_uri` tag; returns (version, that uri)."""
    registry = client(uri)
    bundle = scratch / f"bundle-{time.time_ns()}"
    references.write_bundle(bundle, preprocessed, preprocessed.parent / "data_report.json")
    run_id = registry.create_run(experiment_id(uri, MODEL)).info.run_id
    registry.log_artifacts(run_id, str(bundle), references.ARTIFACT_PATH)
    registry.set_terminated(run_id)
    source = f"runs:/{run_id}/{references.ARTIFACT_PATH}"
    version = registry.create_model_version(
        MODEL, source, run_id=run_id, tags={references.TAG: source} | tags
    )
    return str(version.version), source


def shift_tags(decision: str, reference_version: str = "-") -> dict[str, str]:
    return {SHIFT_TAG: decision, SHIFT_REFERENCE_VERSION_TAG: reference_version}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """v1 trained on original digits; v2 on the changed source, its shift from v1 accepted; v3 whose
    reference artifacts are gone; v4 on the changed source, its shift accepted from v3."""
    root = tmp_path_factory.mktemp("serving-model")
    original = preprocessed_digits(root / "original", small_splits(train_per_class=24, test_per_class=2))
    splits = small_splits(train_per_class=24, test_per_class=2, seed=7)
    changed = {name: (changed_source(images), labels) for name, (images, labels) in splits.items()}
    shifted = preprocessed_digits(root / "changed", changed)
    uri = f"sqlite:///{root / 'registry' / 'mlflow.db'}"
    (root / "registry").mkdir()
    client(uri).create_registered_model(MODEL)
    versions = {
        "1": register(uri, original, root, shift_tags("no_reference")),
        "2": register(uri, shifted, root, shift_tags("accepted", "1")),
        "3": register(uri, original, root, shift_tags("within_limits", "2")),
    }
    versions["4"] = register(uri, shifted, root, shift_tags("accepted", "3"))
    assert list(versions) == [version for version, _ in versions.values()]
    run_id = versions["3"][1].split("/")[1]
    shutil.rmtree(Path(client(uri).get_run(run_id).info.artifact_uri.removeprefix("file://")))
    return {
        "uri": uri,
        "original": original,
        "shifted": shifted,
        "sources": {version: source for version, (_, source) in versions.items()},
    }


def serve(folder: Path, version: str, images: np.ndarray, labels: np.ndarray) -> Path:
    """`images` scored by `version`, ten per request, logged by the server's own RequestLog."""
    log = RequestLog(folder)
    probabilities = np.full((len(labels), 10), 0.001)
    probabilities[np.arange(len(labels)), labels] = 0.991
    for start in range(0, len(images), 10):
        rows = slice(start, start + 10)
        log.record(
            model_name=MODEL,
            model_version=version,
            status=200,
            started=time.perf_counter(),
            images=images[rows],
            probabilities=probabilities[rows],
        )
    return folder


def clients() -> tuple[np.ndarray, np.ndarray]:
    """200 images like the original training data (other draws of the same digits)."""
    return digit_images(20, seed=5)


def test_the_default_baseline_is_the_serving_versions_own_training_data(tmp_path, registry):
    images, labels = clients()
    log = serve(tmp_path / "log", "1", changed_source(images), labels)
    found = run_monitor(log, tmp_path / "found", registry=registry["uri"])
    given = run_monitor(log, tmp_path / "given", baseline=registry["original"])
    assert found["alert"] is True and found["drifting_features"] == ["mean_intensity", "ink_fraction"]
    for key in ("checks", "summary", "alert_reasons", "accepted_shift"):
        assert found[key] == given[key]
    assert found["accepted_shift"] is None  # v1 was not promoted over a shift
    assert found["baseline"] == given["baseline"] | {
        "source": f"registry: {MODEL} v1's reference ({registry['sources']['1']})",
        "model_version": "1",
    }
    assert given["baseline"]["source"] == str(registry["original"])
    assert given["baseline"]["model_version"] is None
    written = contracts.read_json(tmp_path / "found" / "monitor_report.json", "monitor_report")
    assert written == found

    # the version that served the newest request decides, unless model_version names one
    serve(log, "2", changed_source(images), labels)
    newest = run_monitor(log, tmp_path / "newest", registry=registry["uri"])
    assert newest["baseline"]["model_version"] == "2"
    first = run_monitor(log, tmp_path / "first", registry=registry["uri"], model_version="1")
    assert first["baseline"] == found["baseline"] and first["checks"] == found["checks"]


def test_a_baseline_that_cannot_be_found_is_a_clear_error_naming_the_version(tmp_path, registry):
    images, labels = clients()
    out = tmp_path / "report"
    unknown = serve(tmp_path / "unknown", "9", images, labels)
    with pytest.raises(
        UserInputError, match=r"no baseline for mnist-mlops v9: mnist-mlops v9: cannot read its"
    ):
        run_monitor(unknown, out, registry=registry["uri"])
    gone = serve(tmp_path / "gone", "3", images, labels)
    with pytest.raises(UserInputError) as caught:
        run_monitor(gone, out, registry=registry["uri"])
    message = str(caught.value)
    assert message.startswith("no baseline for mnist-mlops v3: mnist-mlops v3's reference")
    assert registry["sources"]["3"] in message and message.endswith(
        "pass --baseline (the preprocess output it was trained on)"
    )
    with pytest.raises(UserInputError, match=r"no registry at .*nowhere\.db to find mnist-mlops v9's"):
        run_monitor(unknown, out, registry=f"sqlite:///{tmp_path / 'nowhere.db'}")
    assert not out.exists() and not (tmp_path / "nowhere.db").exists()


def test_an_accepted_shift_alerts_that_clients_did_not_move_with_the_data(tmp_path, registry, capsys):
    images, labels = clients()
    log = serve(tmp_path / "log", "2", images, labels)  # v2 serves, clients still send yesterday's digits
    report = run_monitor(log, tmp_path / "report", registry=registry["uri"], retrain_data="new.tar.gz")
    assert report["baseline"]["model_version"] == "2" and report["alert"] is True
    assert report["drifting_features"] == ["mean_intensity", "ink_fraction"]
    shift = report["accepted_shift"]
    v1_dataset = contracts.read_json(registry["original"] / "manifest.json", "preprocessed_manifest")[
        "dataset_version"
    ]
    assert (shift["model_version"], shift["reference_version"], shift["clients_moved"]) == ("2", "1", False)
    assert shift["reference_dataset_version"] == v1_dataset != report["baseline"]["dataset_version"]
    assert [finding["feature"] for finding in shift["findings"]] == ["mean_intensity", "ink_fraction"]
    assert not any(finding["shifted"] for finding in shift["findings"])
    reason = report["alert_reasons"][-1]
    assert reason.startswith(
        f"clients did not move with the data: traffic is like mnist-mlops v1's training data"
        f" (dataset {v1_dataset[:12]}; mean_intensity PSI "
    )
    assert reason.endswith("but v2 was trained on data shifted from it (accepted at evaluate)")
    request = contracts.read_json(tmp_path / "report" / "retrain_request.json", "retrain_request")
    assert reason in request["reasons"]
    assert "clients did not move with the data" in capsys.readouterr().out  # in the ALERT line


def test_clients_that_moved_with_the_data_or_elsewhere_are_not_said_to_have_stayed(tmp_path, registry):
    images, labels = clients()
    moved = serve(tmp_path / "moved", "2", changed_source(images), labels)
    report = run_monitor(moved, tmp_path / "moved-report", registry=registry["uri"])
    assert report["alert"] is False and report["accepted_shift"]["clients_moved"] is True
    assert report["accepted_shift"]["reason"].startswith(
        "traffic differs from mnist-mlops v1's training data"
    )

    # the comparison with the older data uses the input-drift thresholds in force as its limits
    rules = {"schema_version": 1, "checks": [{"metric": "psi_mean_intensity", "threshold": 1000}]}
    contracts.write_json(tmp_path / "lenient.json", rules, "monitor_thresholds")
    lenient = run_monitor(
        moved, tmp_path / "lenient", registry=registry["uri"], thresholds=tmp_path / "lenient.json"
    )
    limits = {finding["feature"]: finding["limit"] for finding in lenient["accepted_shift"]["findings"]}
    assert limits == {"mean_intensity": 1000, "ink_fraction": 0.2}

    elsewhere = serve(tmp_path / "elsewhere", "2", noisy(images), labels)
    report = run_monitor(elsewhere, tmp_path / "elsewhere-report", registry=registry["uri"])
    assert report["alert"] is True and report["drifting_features"]
    assert report["accepted_shift"]["clients_moved"] is True
    assert not any("clients did not move" in reason for reason in report["alert_reasons"])


def test_an_accepted_shift_whose_reference_is_gone_is_a_warning_not_a_verdict(tmp_path, registry, capsys):
    images, labels = clients()
    log = serve(tmp_path / "log", "4", images, labels)
    report = run_monitor(log, tmp_path / "report", registry=registry["uri"])
    shift = report["accepted_shift"]
    assert (shift["reference_version"], shift["clients_moved"], shift["findings"]) == ("3", None, [])
    assert shift["reason"].startswith("mnist-mlops v3's reference") and "cannot be read" in shift["reason"]
    assert report["alert"] is True  # v4's own training data still judges the traffic
    assert not any("clients did not move" in reason for reason in report["alert_reasons"])
    assert (
        "warning: cannot tell whether clients moved with the data: mnist-mlops v3" in capsys.readouterr().err
    )

    few = serve(tmp_path / "few", "2", images[:50], labels[:50])
    short = run_monitor(few, tmp_path / "few-report", registry=registry["uri"])
    assert short["accepted_shift"]["clients_moved"] is None
    assert short["accepted_shift"]["reason"].startswith("50 images in the window, fewer than 100")


def test_clients_sending_another_class_mix_of_the_older_data_did_not_move(tmp_path, registry):
    """Traffic of one kind of digit only is a little beyond the older data's limits (its class mix moves
    the features), yet far nearer it than the shifted data: the clients did not move with the data."""
    images, labels = digit_images(40, seed=5)
    nines = labels == 9
    log = serve(tmp_path / "log", "2", images[nines].repeat(4, axis=0), labels[nines].repeat(4))
    report = run_monitor(log, tmp_path / "report", registry=registry["uri"], min_samples=100)
    shift = report["accepted_shift"]
    assert any(finding["shifted"] for finding in shift["findings"])
    assert shift["clients_moved"] is False
    assert any("clients did not move" in reason for reason in report["alert_reasons"])
