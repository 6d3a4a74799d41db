"""The incident, reached through the library's own happy path, and what stops it now.

Production serves a model of the original digits while clients keep sending such digits. A new delivery
from a changed source (same labels and sizes, a very different intensity distribution) arrives and
`mnist-mlops run --data <delivery>` runs as a user would, with no flag to remember: the new data is
compared with production's training data (found through the registry) and with what clients send (the
server's request log), and the challenger is also scored on production's own test split. It is not
deployed, and the reasons name the shift. A fresh delivery from the original source is promoted as before;
accepting the shift is an explicit decision that the blessing, the model card, the registry and the
lineage keep; and the monitor, whose baseline is the serving model's own training data, names the accepted
shift when clients did not move with the data.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mnist_mlops import contracts
from mnist_mlops.cli import main
from mnist_mlops.deployments import ensure_key, key_path, production_version, request_log_dir
from mnist_mlops.imaging import encode_png
from mnist_mlops.keys import read_key
from mnist_mlops.registry import client
from mnist_mlops.serving.server import ScoringClient, running_server, server_environment
from tests import models
from tests.datasets import small_splits, write_png_tree

pytestmark = pytest.mark.slow  # trains models and starts servers

THRESHOLDS = models.LENIENT | {"min_accuracy": 0.3, "max_reference_regression": 0.25}
"""A tiny model cannot reach production's KPIs; the shift limits stay the defaults."""
MODEL = "mnist-mlops"


def changed_source(splits: dict) -> dict:
    """The same kind of digits from a source with another intensity response: low contrast on grey."""
    return {
        name: (((images * 0.4) + 120).astype(np.uint8), labels) for name, (images, labels) in splits.items()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("shift")
    (root / "kpis.json").write_text(json.dumps(THRESHOLDS))
    original, fresh = (small_splits(train_per_class=20, test_per_class=6, seed=seed) for seed in (0, 7))
    return {
        "original": write_png_tree(root / "original", original),
        "fresh": write_png_tree(root / "fresh", fresh),
        "shifted": write_png_tree(root / "shifted", changed_source(fresh)),
        "clients": small_splits(train_per_class=15, test_per_class=1, seed=11)["training"][0],
        "runs": root / "runs",
        "registry": f"sqlite:///{root / 'registry' / 'mlflow.db'}",
        "kpis": root / "kpis.json",
        "root": root,
    }


def run(world: dict, delivery: str, *extra: str) -> dict:
    """`mnist-mlops run` on a delivery as a user runs it; returns what the run left: its record, the
    blessing, the evaluation report, the model card and the registration record."""
    argv = ["run", "--data", str(world[delivery]), "--runs-dir", str(world["runs"])]
    argv += ["--registry", world["registry"], "--set", f"evaluate.thresholds={world['kpis']}"]
    argv += ["--set", "train.epochs=6", "--set", "train.batch_size=16", "--set", "deploy.canary_count=8"]
    before = set(world["runs"].iterdir()) if world["runs"].exists() else set()
    assert main([*argv, *extra]) == 0
    (folder,) = set(world["runs"].iterdir()) - before - {world["runs"] / ".cache"}
    evaluation = folder / "evaluate" / "evaluation"
    return {
        "record": contracts.read_json(folder / "run.json", "run_record"),
        "blessing": contracts.read_json(folder / "evaluate" / "blessing.json", "blessing"),
        "report": contracts.read_json(evaluation / "evaluation_report.json", "evaluation_report"),
        "card": (evaluation / "model_card.md").read_text(),
        "registration": contracts.read_json(
            folder / "register" / "registration_record.json", "registration_record"
        ),
    }


def gates(outcome: dict) -> dict[str, dict]:
    return {gate["name"]: gate for gate in outcome["report"]["thresholds"]}


def clients_send(world: dict, images: np.ndarray) -> None:
    """Clients' traffic through the real scoring server following @production, logged where the local
    serving state keeps it (what `mnist-mlops serve` does)."""
    uri = world["registry"]
    key_file = ensure_key(key_path(uri, MODEL))
    environment = server_environment(
        f"models:/{MODEL}@production",
        registry=uri,
        key_file=key_file,
        request_log=request_log_dir(uri, MODEL),
    )
    with running_server(environment) as server:
        scoring = ScoringClient(server.url, read_key(str(key_file)))
        for image in images:
            status, body = scoring.score(encode_png(image), "image/png")
            assert status == 200, body


def test_shifted_data_never_reaches_production_silently(world, capsys):
    uri = world["registry"]
    first = run(world, "original")
    assert first["record"]["outcome"] == f"deployed {MODEL} v1"
    assert first["blessing"]["data_shift"]["decision"] == "no_reference"
    assert "no production model" in gates(first)["max_data_shift"]["reason"]
    reference_dataset = first["report"]["dataset_version"]
    clients_send(world, world["clients"])

    # the incident: a delivery from a changed source, run with no flag to remember
    capsys.readouterr()
    shifted = run(world, "shifted")
    assert shifted["blessing"]["blessed"] is False
    assert shifted["blessing"]["data_shift"]["decision"] == "shifted"
    assert shifted["record"]["outcome"] == f"not deployed: production stays at {MODEL} v1"
    assert production_version(uri, MODEL) == "1"
    by_name = gates(shifted)
    assert by_name["max_data_shift"]["outcome"] == "fail"
    reason = by_name["max_data_shift"]["reason"]
    assert "mean_intensity PSI" in reason and f"{MODEL} v1" in reason and reference_dataset[:12] in reason
    assert by_name["max_traffic_shift"]["outcome"] == "fail"  # clients still send yesterday's digits
    assert by_name["max_reference_regression"]["outcome"] == "fail"  # and it fails production's own test
    assert "mean_intensity" in capsys.readouterr().out  # the verdict on the console names the shift

    # a fresh delivery from the original source is promoted as before
    fresh = run(world, "fresh")
    assert fresh["record"]["outcome"] == f"deployed {MODEL} v2"
    assert fresh["blessing"]["data_shift"]["decision"] == "within_limits"
    assert {gates(fresh)[name]["outcome"] for name in ("max_data_shift", "max_traffic_shift")} == {"pass"}

    # promoting the shifted data anyway is a decision, and it is written down everywhere
    accepted = run(world, "shifted", "--set", "evaluate.accept_data_shift=true")
    assert accepted["record"]["outcome"] == f"deployed {MODEL} v3"
    assert accepted["blessing"]["data_shift"]["decision"] == "accepted"
    assert accepted["record"]["lineage"]["data_shift"] == "accepted"
    assert gates(accepted)["max_data_shift"]["outcome"] == "accepted"
    assert "accepted" in accepted["card"].lower()
    lineage = accepted["registration"]["lineage"]["data_shift"]
    assert lineage["decision"] == "accepted" and lineage["reference_model_version"] == "2"
    tags = client(uri).get_model_version(MODEL, "3").tags
    assert tags["data_shift"] == "accepted" and tags["data_shift.reference_version"] == "2"

    # clients did not move with the data: the monitor, on v3's own training data, says so
    clients_send(world, world["clients"])
    report = world["root"] / "monitor"
    argv = ["monitor", "--requests", str(request_log_dir(uri, MODEL)), "--report", str(report)]
    assert main([*argv, "--registry", uri, "--model-version", "3", "--min-samples", "50"]) == 0
    document = contracts.read_json(report / "monitor_report.json", "monitor_report")
    assert document["alert"] is True
    assert any("clients did not move" in reason for reason in document["alert_reasons"])
