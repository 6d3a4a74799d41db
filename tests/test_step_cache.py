"""The step cache's same-content rule: when it holds, which key it reuses, and how the local runner
applies it (a stand-in for the component's command, so nothing trains here)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mnist_mlops.champions import RECORD
from mnist_mlops.components.resolve_champion.executor import run_resolve_champion
from mnist_mlops.deployments import request_log_dir
from mnist_mlops.hashing import content_sha256
from mnist_mlops.pipelines import local
from mnist_mlops.pipelines.graph import Node
from mnist_mlops.ports import component_names, load_metadata, load_spec
from mnist_mlops.runner import is_artifact
from mnist_mlops.serving.request_log import RequestLog
from mnist_mlops.step_cache import SameContentRule, StepCache, step_key

RULE = SameContentRule(input="champion", part="model", same_as="challenger")
SHA = {name: name[0] * 64 for name in ("challenger", "data", "other", "thresholds")}


def model(folder: Path, weights: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "MLmodel").write_text("flavor: keras\n")
    (folder / "weights.bin").write_text(weights)
    return folder


def champion(folder: Path, weights: str | None) -> Path:
    """A champion folder: a record, and the model when there is one."""
    if weights is not None:
        model(folder / "model", weights)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "champion.json").write_text(json.dumps({"found": weights is not None}))
    return folder


@pytest.mark.parametrize(
    ("champion_weights", "challenger_weights", "holds"),
    [
        ("w1", "w1", True),  # the champion is the challenger itself
        ("w2", "w1", False),  # another model in production
        (None, "w1", False),  # no champion yet
    ],
)
def test_the_rule_holds_only_for_the_same_model_content(
    tmp_path, champion_weights, challenger_weights, holds
):
    challenger = model(tmp_path / "elsewhere" / "challenger", challenger_weights)
    inputs = {"challenger": challenger, "champion": champion(tmp_path / "champion", champion_weights)}
    artifacts = {port: content_sha256(path) for port, path in inputs.items()}
    assert RULE.holds(inputs, artifacts) is holds


def test_the_rule_needs_both_inputs(tmp_path):
    folder = champion(tmp_path / "champion", "w1")
    sha = content_sha256(folder / "model")
    assert RULE.holds({"champion": folder}, {"champion": content_sha256(folder)}) is False
    assert RULE.holds({}, {"challenger": sha}) is False


def standing(artifacts: dict[str, str], parameters: dict | None = None) -> str:
    return RULE.standing_key("evaluate", artifacts, parameters or {})


def test_the_standing_key_ignores_only_the_champion():
    base = {"challenger": SHA["challenger"], "preprocessed": SHA["data"], "champion": SHA["other"]}
    assert (
        standing(base)
        == standing(base | {"champion": SHA["thresholds"]})
        == standing({key: value for key, value in base.items() if key != "champion"})
    )
    changed = [
        base | {"challenger": SHA["other"]},  # another model
        base | {"preprocessed": SHA["other"]},  # new data
        base | {"thresholds": SHA["thresholds"]},  # other KPIs
    ]
    assert len({standing(base), *map(standing, changed)}) == 4
    assert standing(base, {"challenger_name": "x"}) != standing(base)
    assert RULE.standing_key("train", base, {}) != standing(base)


def test_the_standing_key_is_never_a_key_of_a_run_without_the_champion():
    without = {"challenger": SHA["challenger"], "preprocessed": SHA["data"]}
    assert standing(without) != step_key("evaluate", without, {})


@pytest.mark.parametrize("name", component_names())
def test_a_declared_rule_names_artifact_inputs_of_the_component(name):
    rule = SameContentRule.from_metadata(load_metadata(name))
    if rule is not None:
        ports = load_spec(name)["inputs"]
        assert is_artifact(ports[rule.input]) and is_artifact(ports[rule.same_as])


def test_evaluate_declares_that_a_champion_which_is_the_challenger_leaves_nothing_to_judge():
    assert SameContentRule.from_metadata(load_metadata("evaluate")) == RULE


class Evaluations:
    """Stands in for evaluate's command: writes a blessing that says what it was judged against."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, node: Node, inputs: dict, outputs: dict, log: Path, options, environment) -> int:
        self.count += 1
        found = (Path(inputs["champion"]) / "model").is_dir()
        against = content_sha256(Path(inputs["champion"]) / "model")[:8] if found else "nothing"
        Path(outputs["evaluation"]).mkdir(parents=True)
        (Path(outputs["evaluation"]) / "evaluation_report.json").write_text("{}")
        blessing = {
            "blessed": True,
            "reasons": [f"evaluation {self.count} against {against}"],
            "data_shift": {"decision": "no_reference"},  # the runner copies it into the run's lineage
        }
        Path(outputs["blessing"]).write_text(json.dumps(blessing))
        return 0


@pytest.fixture
def evaluations(monkeypatch) -> Evaluations:
    fake = Evaluations()
    monkeypatch.setattr(local, "_execute", fake)
    return fake


def evaluate(tmp_path: Path, champion_dir: Path, challenger: Path, data: Path, *, use_cache: bool = True):
    """One evaluate node through the real runner and cache; returns its run record entry and outcome."""
    inputs = {"challenger": challenger, "preprocessed": data, "champion": champion_dir}
    run_dir = tmp_path / "runs" / f"run{len(list((tmp_path / 'runs').glob('run*')))}"
    run_dir.mkdir(parents=True)
    options = local.RunOptions(use_cache=use_cache, tracking=False)  # no MLflow runs in the working folder
    assert (
        local.run_nodes(
            [Node("evaluate", "evaluate", inputs)], run_dir, StepCache(tmp_path / "cache"), options
        )
        == 0
    )
    record = json.loads((run_dir / "run.json").read_text())
    blessing = json.loads((run_dir / "evaluate" / "blessing.json").read_text())
    return record["nodes"][0], record["outcome"], blessing["reasons"][0]


def test_the_runner_reuses_the_verdict_only_while_the_champion_is_the_challenger_itself(
    tmp_path, evaluations, capsys
):
    data = tmp_path / "data"
    data.mkdir()
    (data / "test.npz").write_text("split 1")
    challenger = model(tmp_path / "train" / "model", "w1")
    nobody = champion(tmp_path / "champions" / "none", None)
    itself = champion(tmp_path / "champions" / "v1", "w1")
    another = champion(tmp_path / "champions" / "v2", "w2")

    first, _, verdict = evaluate(tmp_path, nobody, challenger, data)
    assert first["status"] == "done" and verdict == "evaluation 1 against nothing"

    capsys.readouterr()
    again, outcome, verdict = evaluate(tmp_path, itself, challenger, data)
    assert again["status"] == "cached" and verdict == "evaluation 1 against nothing"
    assert again["cache_key"] != first["cache_key"] and evaluations.count == 1
    reason = "champion holds the same content as challenger: the result for this challenger stands"
    assert f"[evaluate] cached ({again['cache_key'][:12]}): {reason}" in capsys.readouterr().out
    assert outcome == f"finished; evaluate reused: {reason}" and again["reused_because"] == reason

    judged, _, verdict = evaluate(tmp_path, another, challenger, data)  # a new champion is judged
    assert judged["status"] == "done" and verdict.startswith("evaluation 2 against ")

    _, _, verdict = evaluate(tmp_path, itself, challenger, data)  # the latest verdict is the one that stands
    assert verdict.startswith("evaluation 2 against ") and evaluations.count == 2

    (data / "test.npz").write_text("split 2")  # new data: judged again, even against itself
    fresh, _, verdict = evaluate(tmp_path, itself, challenger, data)
    assert fresh["status"] == "done" and verdict == f"evaluation 3 against {content_sha256(challenger)[:8]}"
    same, outcome, _ = evaluate(tmp_path, itself, challenger, data)  # its own key still serves it
    assert same["status"] == "cached" and same["cache_key"] == fresh["cache_key"] and "reused" not in outcome
    assert "reused_because" not in same


def test_a_self_comparison_run_without_the_cache_does_not_replace_the_verdict_that_stands(
    tmp_path, evaluations
):
    data = tmp_path / "data"
    data.mkdir()
    (data / "test.npz").write_text("split 1")
    challenger = model(tmp_path / "train" / "model", "w1")
    evaluate(tmp_path, champion(tmp_path / "champions" / "none", None), challenger, data)
    itself = champion(tmp_path / "champions" / "v1", "w1")
    forced, _, _ = evaluate(tmp_path, itself, challenger, data, use_cache=False)
    assert forced["status"] == "done" and evaluations.count == 2
    again, _, verdict = evaluate(tmp_path, itself, challenger, data)
    assert again["status"] == "cached" and verdict == "evaluation 1 against nothing"


def test_a_cached_champion_is_reused_only_while_the_request_log_is_unchanged(tmp_path):
    registry = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def resolved(run: int) -> dict[str, dict[str, str]]:
        """A champion resolved now (the request log in its default folder), as the step cache holds it."""
        folder = tmp_path / f"champion-{run}"
        run_resolve_champion(folder, registry=registry)
        return {"champion": {"path": str(folder)}}

    def client_sends_an_image() -> None:
        RequestLog(request_log_dir(registry, "mnist-mlops")).record(
            model_name="mnist-mlops",
            model_version="1",
            status=200,
            started=time.perf_counter(),
            images=np.zeros((1, 28, 28), np.uint8),
            probabilities=np.full((1, 10), 0.1),
        )

    cached = resolved(1)
    assert local._registry_agrees(cached, registry)  # nothing served, nothing changed
    client_sends_an_image()
    assert not local._registry_agrees(cached, registry)  # the first request: read the log

    cached = resolved(2)
    assert local._registry_agrees(cached, registry)
    client_sends_an_image()
    assert not local._registry_agrees(cached, registry)

    # resolved in a container (--isolation container): the record names the container's mount
    cached = resolved(3)
    record_file = Path(cached["champion"]["path"]) / RECORD
    record = json.loads(record_file.read_text())
    record["traffic"]["folder"] = "/mnt/registry/deployments/requests/mnist-mlops"
    assert not Path(record["traffic"]["folder"]).exists()
    record_file.write_text(json.dumps(record))
    assert local._registry_agrees(cached, registry)  # the same log, read here beside the registry
    client_sends_an_image()
    assert not local._registry_agrees(cached, registry)


def test_a_champion_that_is_the_challenger_has_its_content_though_register_added_the_scoring_export(
    tmp_path,
):
    """register logs the model with its scoring export (`onnx_export.EXPORT_FOLDER`); resolve_champion
    hands evaluate the model without it, so the rule still finds the challenger itself in production
    (else every rerun would judge, register and deploy again), and any other model is still judged."""
    import mlflow
    from mlflow import MlflowClient

    from mnist_mlops.onnx_export import EXPORT_FOLDER

    registry = f"sqlite:///{tmp_path / 'mlflow.db'}"
    trained = model(tmp_path / "train" / "model", "w1")
    logged = tmp_path / "logged"
    shutil.copytree(trained, logged)
    (logged / EXPORT_FOLDER).mkdir()
    (logged / EXPORT_FOLDER / "model.onnx").write_text("the export")
    mlflow.set_tracking_uri(registry)
    client = MlflowClient(registry)
    client.create_registered_model("mnist-mlops")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(logged), artifact_path="model")
    version = client.create_model_version("mnist-mlops", f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias("mnist-mlops", "production", version.version)

    folder = tmp_path / "champion"
    assert run_resolve_champion(folder, registry=registry)["version"] == str(version.version)
    assert not (folder / "model" / EXPORT_FOLDER).exists()
    assert RULE.holds({"champion": folder}, {"challenger": content_sha256(trained)})
    another = model(tmp_path / "other" / "model", "w2")
    assert not RULE.holds({"champion": folder}, {"challenger": content_sha256(another)})


def test_a_run_killed_holding_the_cache_lock_is_named_to_the_next_and_only_to_it(tmp_path):
    killed = (
        "import os, signal\nfrom pathlib import Path\nfrom mnist_mlops.step_cache import StepCache\n"
        f"with StepCache(Path({str(tmp_path)!r})).held_by('20261207-101010-killed'):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    assert subprocess.run([sys.executable, "-c", killed], check=False).returncode == -signal.SIGKILL
    found: list[str] = []
    with StepCache(tmp_path).held_by("20261207-101011-next", recover=found.append):
        assert found == ["20261207-101010-killed"]
    with pytest.raises(RuntimeError), StepCache(tmp_path).held_by("20261207-101012-fails"):
        raise RuntimeError("a run that fails lets go of the lock like one that succeeds")
    with StepCache(tmp_path).held_by("20261207-101013-after", recover=found.append):
        assert found == ["20261207-101010-killed"]  # the ones before let go of it
