"""Hyperparameter sweeps: `--sweep` parsed and checked against the spec, the Azure ML sweep node compiled
and validated offline, and a small local sweep whose trials are cached like nodes and whose best trial
(by validation accuracy) feeds the nodes downstream."""

import json
import math
from pathlib import Path

import pytest
import yaml
from azure.ai.ml import Input, dsl, load_job
from azure.ai.ml.entities._builders.sweep import Sweep as SweepNode
from azure.ai.ml.sweep import Choice, LogUniform

from components.train.executor import EPOCH_METRICS
from mnist_mlops import contracts
from mnist_mlops.azure_jobs import validation_problems
from mnist_mlops.cli import main
from mnist_mlops.errors import UserInputError
from mnist_mlops.pipelines.aml import aml_graph, component, training_job
from mnist_mlops.pipelines.graph import nodes_from_aml, training_pipeline
from mnist_mlops.pipelines.job_options import job_from_options
from mnist_mlops.pipelines.schedules import build_parser
from mnist_mlops.pipelines.sweep import OBJECTIVES, Objective, parse_sweep
from mnist_mlops.ports import load_spec
from tests.datasets import small_splits, write_png_tree


def _nodes():
    return training_pipeline({"source_uri": "data"})


def test_the_objective_is_what_train_logs_each_epoch_and_writes_in_its_summary():
    objective = OBJECTIVES["train"]
    assert objective.metric in EPOCH_METRICS  # logged to MLflow every epoch: what Azure ML's sweep reads
    assert objective.metric.startswith("val_")  # the validation split, never the test split
    assert load_spec("train")["outputs"][objective.summary_port]["type"] == "uri_file"
    summary = contracts.load_schema("training_summary")
    assert objective.metric in summary["properties"]["metrics"]["required"]


def test_the_best_trial_wins_and_a_tie_goes_to_the_first():
    assert Objective("m", "maximize", "s").best([0.5, 0.9, 0.9, 0.1]) == 1
    assert Objective("m", "minimize", "s").best([0.5, 0.2, 0.2, 0.9]) == 1


def test_a_local_sweep_is_the_grid_of_the_values_typed_by_the_spec():
    sweep = parse_sweep(_nodes(), ["train.learning_rate=0.001,0.003", "train.batch_size=8,16"])
    assert (sweep.node, sweep.sampling) == ("train", "grid")
    assert sweep.grid() == [
        {"learning_rate": 0.001, "batch_size": 8},
        {"learning_rate": 0.001, "batch_size": 16},
        {"learning_rate": 0.003, "batch_size": 8},
        {"learning_rate": 0.003, "batch_size": 16},
    ]
    assert all(isinstance(point["batch_size"], int) for point in sweep.grid())
    assert parse_sweep(_nodes(), []) is None


@pytest.mark.parametrize(
    ("items", "overrides", "message"),
    [
        (["trian.epochs=1,2"], [], "no node 'trian'"),
        (["train.epoch=1,2"], [], "train has no input 'epoch'"),
        (["train.epochs=3"], [], "two values or more"),
        (["train.epochs=2,2"], [], "a value is given twice"),
        (["train.epochs=2,x"], [], "'x' is not a valid integer"),
        (["train.batch_size=4,8"], [], "below the minimum 8"),
        (["train.preprocessed=a,b"], [], "not a parameter of train"),
        (["evaluate.accept_data_shift=true,false"], [], "declares no objective"),
        (["train.epochs=1,2", "preprocess.seed=1,2"], [], "one node at a time"),
        (["train.epochs=1,2", "train.epochs=3,4"], [], "swept twice"),
        (["train.epochs"], [], "expected NODE.PARAM=V1,V2"),
        (["train.epochs=1,2"], ["train.epochs=3"], "train.epochs is swept"),
        (["train.learning_rate=0.1,0.2"], ["learning_rate=0.3"], "train.learning_rate is swept"),
    ],
)
def test_a_wrong_sweep_is_refused_naming_what_is_wrong(items, overrides, message):
    with pytest.raises(UserInputError, match=message):
        parse_sweep(_nodes(), items, overrides)


def test_a_local_run_refuses_a_bad_sweep_before_running_anything(tmp_path, capsys):
    runs = tmp_path / "runs"
    base = ["run", "--data", str(tmp_path), "--runs-dir", str(runs), "--tracking", "off"]
    assert main([*base, "--sweep", "default"]) == 2
    assert "explicit values" in capsys.readouterr().err
    assert main([*base, "--sweep", "train.epochs=1,2", "--until", "preprocess"]) == 2
    assert "the run stops before it" in capsys.readouterr().err
    assert main([*base, "--sweep", "train.epochs=1,2", "--set", "epochs=3"]) == 2
    assert "train.epochs is swept" in capsys.readouterr().err
    assert not runs.exists()


def test_the_aml_pipeline_compiles_train_as_a_sweep_node_that_loads_back(tmp_path, capsys):
    out = tmp_path / "aml"
    assert main(["compile", "--target", "aml", "--out", str(out), "--sweep", "default"]) == 0
    document = yaml.safe_load((out / "pipeline.yml").read_text())
    train = document["jobs"]["train"]
    assert train["type"] == "sweep"
    assert train["trial"] == "./components/train/spec.yaml"
    assert train["objective"] == {"goal": "maximize", "primary_metric": "val_accuracy"}
    assert train["sampling_algorithm"] == "random"
    space = train["search_space"]
    assert space["batch_size"] == {"type": "choice", "values": [64, 128, 256]}
    assert space["learning_rate"]["type"] == "loguniform"
    assert math.isclose(math.exp(space["learning_rate"]["min_value"]), 1e-4)
    assert set(train["limits"]) == {"max_total_trials", "max_concurrent_trials", "timeout", "trial_timeout"}
    assert train["early_termination"]["type"] == "bandit"
    assert not {"learning_rate", "batch_size", "epochs"} & set(train["inputs"])  # the sweep sets them
    assert not {"learning_rate", "batch_size", "epochs"} & set(document["inputs"])
    challenger = document["jobs"]["evaluate"]["inputs"]["challenger"]["path"]
    assert challenger == "${{parent.jobs.train.outputs.model}}"  # the best trial's model
    loaded = load_job(out / "pipeline.yml")
    assert loaded._validate().passed
    assert isinstance(loaded.jobs["train"], SweepNode)


def test_explicit_values_make_a_grid_sweep_on_aml_and_submit_and_schedules_take_them():
    args = build_parser().parse_args(
        ["--out", "x", "--sweep", "train.batch_size=32,64", "--sweep", "train.epochs=2,3"]
    )
    job = job_from_options(args)
    train = job._to_dict()["jobs"]["train"]
    assert train["sampling_algorithm"] == "grid"
    assert train["limits"]["max_total_trials"] == 4  # the whole grid, as locally
    assert validation_problems(job) == []
    with pytest.raises(UserInputError, match="one instance"):
        training_job(sweep=parse_sweep(aml_graph(), ["default"]), train_instance_count=2)


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["train.augment=true,false"], "a boolean choice to the trial as 1/0"),
        (["train.epochs=1,2,3", "train.batch_size=8,16,32"], "9 trials in the grid .* at most 8"),
    ],
)
def test_an_aml_sweep_it_would_run_wrong_or_too_long_is_refused(items, message):
    sweep = parse_sweep(aml_graph(), items)  # both are fine locally
    assert len(sweep.grid()) >= 2
    with pytest.raises(UserInputError, match=message):
        training_job(sweep=sweep)


def test_a_search_space_outside_the_spec_is_refused_offline(tmp_path, capsys):
    out = tmp_path / "aml"
    assert main(["compile", "--target", "aml", "--out", str(out), "--sweep", "train.batch_size=4,8"]) == 2
    assert "below the minimum 8" in capsys.readouterr().err
    assert not out.exists()

    @dsl.pipeline(name="notebook_sweep", default_compute="cpu-cluster")
    def notebook(preprocessed: Input(type="uri_folder")):  # a sweep written by hand, as in a notebook
        tuned = component("train")(preprocessed=preprocessed).sweep(
            primary_metric="val_accuracy",
            goal="maximize",
            search_space={"batch_size": Choice([4, 64]), "learning_rate": LogUniform(-9.0, 1.0)},
            max_total_trials=2,
        )
        tuned.name = "train"

    problems = validation_problems(notebook(preprocessed=Input(type="uri_folder", path="azureml:p:1")))
    assert any("batch_size=4: below the minimum 8" in problem for problem in problems), problems
    assert any("learning_rate=" in problem and "above the maximum 1" in problem for problem in problems)


def test_an_aml_sweep_job_is_not_run_locally_as_it_is():
    job = training_job(sweep=parse_sweep(aml_graph(), ["train.epochs=1,2"]))
    with pytest.raises(UserInputError, match="an Azure ML sweep node"):
        nodes_from_aml(job)


def test_kubeflow_has_no_sweep(tmp_path, capsys):
    assert main(["compile", "--target", "kfp", "--out", str(tmp_path / "kfp"), "--sweep", "default"]) == 2
    assert "no sweep node" in capsys.readouterr().err


@pytest.mark.slow
def test_a_local_sweep_caches_each_trial_and_goes_on_with_the_best(tmp_path):
    data = write_png_tree(tmp_path / "data", small_splits())
    runs = tmp_path / "runs"
    argv = ["run", "--data", str(data), "--runs-dir", str(runs), "--until", "train"]
    argv += ["--registry", f"sqlite:///{tmp_path}/mlflow.db", "--set", "train.epochs=1"]
    argv += ["--set", "train.batch_size=16", "--sweep", "train.learning_rate=0.001,0.01"]

    first = _run(argv, runs)
    train = first["nodes"][-1]
    sweep = train["sweep"]
    assert [trial["parameters"] for trial in sweep["trials"]] == [
        {"learning_rate": 0.001},
        {"learning_rate": 0.01},
    ]
    assert [trial["status"] for trial in sweep["trials"]] == ["done", "done"]
    scores = []
    for trial in sweep["trials"]:
        summary = json.loads((Path(trial["folder"]) / "training_summary.json").read_text())
        assert summary["hyperparameters"]["learning_rate"] == trial["parameters"]["learning_rate"]
        scores.append(summary["metrics"]["val_accuracy"])
        assert trial["objective"] == scores[-1]
    best = scores.index(max(scores))  # the first of equals
    assert [trial["chosen"] for trial in sweep["trials"]] == [index == best for index in range(2)]
    chosen = sweep["trials"][best]
    assert sweep["chosen"] == chosen["name"] == f"train.trial-{best + 1}"
    assert train["cache_key"] == chosen["cache_key"]
    assert train["parameters"]["learning_rate"] == chosen["parameters"]["learning_rate"]
    for output in train["outputs"].values():  # where the nodes downstream read: the chosen trial's
        assert Path(output["path"]).parent.name == "train"
    report = (runs / first["run_id"] / "report.html").read_text()
    assert "Sweep of train: maximize val_accuracy" in report and "train.trial-2" in report
    model = (Path(chosen["folder"]) / "model" / "MLmodel").read_bytes()
    assert (Path(train["outputs"]["model"]["path"]) / "MLmodel").read_bytes() == model

    again = _run(argv, runs)  # every trial from the cache
    assert [trial["status"] for trial in again["nodes"][-1]["sweep"]["trials"]] == ["cached", "cached"]
    assert again["nodes"][-1]["status"] == "cached"
    assert again["nodes"][-1]["outputs"]["model"]["sha256"] == train["outputs"]["model"]["sha256"]

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (parent,) = client.search_runs(
        [first["tracking"]["experiment_id"]], f"attributes.run_name = '{first['run_id']}'"
    )
    children = client.search_runs(
        [first["tracking"]["experiment_id"]], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    by_name = {run.info.run_name: run for run in children}
    assert {"train.trial-1", "train.trial-2", "train"} <= set(by_name)
    assert "val_accuracy" in by_name["train.trial-1"].data.metrics
    reused = by_name["train"].data.tags["mnist_mlops.reused_run_id"]
    assert reused == by_name[chosen["name"]].info.run_id  # the node's run links to the chosen trial's
    assert by_name["train"].data.tags["mnist_mlops.status"] == "chosen_trial"


def _run(argv: list[str], runs: Path) -> dict:
    known = set(runs.iterdir()) if runs.exists() else set()
    assert main(argv) == 0
    (run_dir,) = set(runs.iterdir()) - known - {runs / ".cache"}
    record = json.loads((run_dir / "run.json").read_text())
    contracts.validate(record, "run_record", source=str(run_dir / "run.json"))
    return record
