"""evaluate: the production-validation gate. Judges a challenger against explicit KPI thresholds and
against the current champion, both scored on the same current test split in the same run, and judges
the new training data against the data the champion was trained on and what clients send (`shift`).

Framework-free interface. Always writes its outputs, blessed or not: the blessing and its reasons are
the record a reviewer and the register/deploy stages read. Output folder `evaluation/`:
    evaluation_report.json   evaluation_report schema: metrics, champion, every gate with reason, data shift
    confusion_matrix.png, misclassified.png, model_card.md
and `blessing.json` (blessing schema).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from mnist_mlops import __version__, contracts, tracking
from mnist_mlops.atomic import atomic_write_text, staged_dir
from mnist_mlops.baselines import read_baseline
from mnist_mlops.champions import Champion, read_champion
from mnist_mlops.components.evaluate import shift
from mnist_mlops.dataset import load_split
from mnist_mlops.errors import UserInputError
from mnist_mlops.hashing import content_sha256
from mnist_mlops.inference import predict_in_batches
from mnist_mlops.model_interface import ModelInterface
from mnist_mlops.ports import checked
from mnist_mlops.provenance import utc_iso

COMPONENT_NAME = "mnist_mlops_evaluate"
DEFAULT_THRESHOLDS = {
    "schema_version": 1,
    "min_accuracy": 0.99,
    "min_class_recall": 0.97,
    "max_regression": 0.002,
    "max_p99_latency_ms": 25.0,
}
"""Used when no thresholds file is given; a thresholds file replaces them all (kpi_thresholds schema).
The data-shift limits are optional in either: missing ones take `data_shift.DEFAULT_LIMITS` and
`shift.DEFAULT_REFERENCE_REGRESSION`, so older threshold files still judge shifted data. They were set
for MNIST: applied to another problem, the blessing and the model card say so."""
LATENCY_SAMPLES = 200


@checked("evaluate")
def run_evaluate(
    challenger: str | Path,
    preprocessed: str | Path,
    evaluation: str | Path,
    blessing: str | Path,
    *,
    champion: str | Path | None = None,
    thresholds: str | Path | None = None,
    challenger_name: str = "challenger",
    accept_data_shift: bool = False,
) -> dict[str, Any]:
    """Score challenger (and champion) on the current test split and the champion's own; compare the
    training data with production's and with recent traffic; write the report and blessing. A champion
    that takes or answers something else than the challenger is not scored (the regression gate is
    skipped, saying why), and promoting the challenger under its name would change what every client
    sends and gets back: `max_data_shift` fails naming both interfaces unless `accept_data_shift`."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    kpis = contracts.read_json(thresholds, "kpi_thresholds") if thresholds else DEFAULT_THRESHOLDS
    preprocessed = Path(preprocessed)
    manifest = contracts.read_json(preprocessed / "manifest.json", "preprocessed_manifest")
    images, labels = load_split(preprocessed, manifest, "test")
    interface = ModelInterface.of_model(challenger)
    check_fits(
        interface, manifest, images, f"evaluate: model {challenger} on the test split of {preprocessed}"
    )
    training = read_baseline(preprocessed)
    current = read_champion(champion) if champion is not None else None
    champion_dir = current.model if current is not None else None
    unlike = champion_unlike(current, interface) if champion_dir is not None else None
    reference = shift.read_reference(current, interface, unlike)
    challenger_predict = model_function(load_model(challenger))
    challenger_figures, mistakes = score(challenger_predict, images, labels, interface.classes)
    champion_figures = split_accuracy = None
    if champion_dir is not None and unlike is None:
        champion_predict = model_function(load_model(champion_dir))
        figures, _ = score(champion_predict, images, labels, interface.classes)
        champion_figures = figures | {
            "name": current.record["model_name"],
            "version": current.record["version"],
            "uri": current.record["model_uri"],
        }
        if reference.test_split is not None:
            split_accuracy = (
                accuracy(challenger_predict, *reference.test_split),
                accuracy(champion_predict, *reference.test_split),
            )
    itself = champion_figures is not None and content_sha256(champion_dir) == content_sha256(Path(challenger))
    no_champion = (
        f"no champion to compare with: {unlike}" if unlike else "first run: no champion to compare with"
    )
    gates = evaluate_gates(
        challenger_figures, champion_figures, kpis, champion_is_challenger=itself, no_champion=no_champion
    )
    shift_gates, data_shift = shift.judge(
        current, reference, training, split_accuracy, kpis, accept=accept_data_shift, unlike=unlike
    )
    gates += shift_gates
    blessed = all(gate["outcome"] != "fail" for gate in gates)
    now = utc_iso(datetime.now(UTC))
    report = {
        "schema_version": 1,
        "model": {
            "name": challenger_name,
            "uri": str(Path(challenger).resolve()),
            **interface.metadata(),
        },
        "dataset_version": manifest["dataset_version"],
        "test_count": len(labels),
        **{key: challenger_figures[key] for key in ("accuracy", "per_class", "confusion_matrix", "latency")},
        "champion": champion_figures,
        "thresholds_source": "given" if thresholds else "mnist_defaults",
        "thresholds": gates,
        "data_shift": data_shift,
        "blessed": blessed,
        "generated_at": now,
    }
    contracts.validate(report, "evaluation_report", source="evaluation_report.json")
    from mnist_mlops.plots import confusion_matrix, image_grid

    notes = [note] if (note := thresholds_note(report["thresholds_source"], interface)) else []
    classes = interface.classes
    with staged_dir(Path(evaluation)) as stage:
        contracts.write_json(stage / "evaluation_report.json", report, "evaluation_report")
        confusion_matrix(
            np.asarray(challenger_figures["confusion_matrix"]), stage / "confusion_matrix.png", classes
        )
        worst, predicted, confidence = mistakes
        captions = [
            f"true {classes[labels[i]]} -> {classes[predicted[i]]} ({confidence[i]:.2f})" for i in worst
        ]
        image_grid(images[worst], captions, stage / "misclassified.png")
        atomic_write_text(stage / "model_card.md", model_card(report, manifest, interface, notes, unlike))
        report_sha = hashlib.sha256((stage / "evaluation_report.json").read_bytes()).hexdigest()
    blessing_document = {
        "schema_version": 1,
        "blessed": blessed,
        "reasons": [
            *(
                [gate["reason"] for gate in gates if gate["outcome"] == "fail"]
                if not blessed
                else [f"{gate['name']}: {gate['reason']}" for gate in gates]
            ),
            *notes,
        ],
        "first_run_without_champion": champion_figures is None,
        "model_uri": report["model"]["uri"],
        "dataset_version": manifest["dataset_version"],
        "evaluation_report_sha256": report_sha,
        "data_shift": shift.blessing_record(data_shift, shift_gates),
        "generated_at": now,
    }
    contracts.write_json(blessing, blessing_document, "blessing")
    with tracking.node_run("evaluate") as run:
        _log_judgement(run, report, Path(evaluation))
    verdict = "BLESSED" if blessed else "NOT BLESSED"
    print(f"{verdict}: " + "; ".join(blessing_document["reasons"]), flush=True)
    return report


def _log_judgement(run: tracking.NodeRun, report: dict[str, Any], evaluation: Path) -> None:
    """The report's figures for the challenger and (prefixed `champion_`) the champion, every gate's
    value (`gate.<name>`), outcome and reason, the verdict, and the figures and model card as files."""
    champion, gates = report["champion"], report["thresholds"]
    champion_figures = figure_metrics(champion) if champion is not None else {}
    run.metrics(
        figure_metrics(report)
        | {f"champion_{key}": value for key, value in champion_figures.items()}
        | {f"gate.{gate['name']}": gate["value"] for gate in gates if gate["value"] is not None}
        | {"blessed": int(report["blessed"])}
    )
    run.tags(
        {
            "blessed": str(report["blessed"]).lower(),
            "dataset_version": report["dataset_version"],
            "thresholds_source": report["thresholds_source"],
        }
        | ({"champion": f"{champion['name']} v{champion['version']}"} if champion is not None else {})
        | {f"gate.{gate['name']}": gate["outcome"] for gate in gates}
        | {f"reason.{gate['name']}": gate["reason"] for gate in gates}
    )
    for name in ("evaluation_report.json", "confusion_matrix.png", "misclassified.png", "model_card.md"):
        run.artifact(evaluation / name)


def figure_metrics(figures: dict[str, Any]) -> dict[str, float]:
    """A model's report figures as MLflow metrics: accuracy, macro and per-class precision and recall
    (`recall_<class name>`, see `metric_names`), single-image latency."""
    per_class = figures["per_class"]
    names = metric_names([row["name"] for row in per_class])
    return {
        "accuracy": figures["accuracy"],
        "precision_macro": float(np.mean([row["precision"] for row in per_class])),
        "recall_macro": float(np.mean([row["recall"] for row in per_class])),
        "latency_p50_ms": figures["latency"]["p50_ms"],
        "latency_p99_ms": figures["latency"]["p99_ms"],
        **{f"precision_{name}": row["precision"] for name, row in zip(names, per_class, strict=True)},
        **{f"recall_{name}": row["recall"] for name, row in zip(names, per_class, strict=True)},
    }


def metric_names(classes: list[str]) -> list[str]:
    """Class names as parts of MLflow metric keys: letters, digits and `_-. ` are kept, every other
    character becomes `_` (MLflow refuses most, and `/` would make the key a path). When two names then
    collide, every name gets its label in front (`3_a_b`), so no two classes share a key."""
    cleaned = [re.sub(r"[^\w.\- ]", "_", name) for name in classes]
    if len(set(cleaned)) == len(cleaned):
        return cleaned
    return [f"{label}_{name}" for label, name in enumerate(cleaned)]


def check_fits(interface: ModelInterface, manifest: dict[str, Any], images: np.ndarray, source: str) -> None:
    """Refuse test data the model cannot be judged on: labelled with classes it does not answer (or in
    another order), or images of another shape."""
    interface.check_answers(ModelInterface.of_dataset(manifest).classes, source)
    interface.check_images(images, source)


def champion_unlike(current: Champion, interface: ModelInterface) -> str | None:
    """Why production's model cannot be scored where the challenger is (it takes or answers something
    else), naming both; None when it can."""
    production = ModelInterface.of_model(current.model)
    if production == interface:
        return None
    name = f"{current.record['model_name']} v{current.record['version']}"
    return f"{name} in production takes {production.describe()}; this model takes {interface.describe()}"


def thresholds_note(source: str, interface: ModelInterface) -> str | None:
    """The warning that MNIST's built-in thresholds judged another problem; None when they did not. Data
    described as MNIST is (28x28 grayscale, classes "0".."9"): IDX files without `classes` read so."""
    if source == "given" or interface.is_mnist:
        return None
    defaults = ", ".join(
        f"{name} {value}" for name, value in DEFAULT_THRESHOLDS.items() if name != "schema_version"
    )
    return (
        f"KPI thresholds: MNIST's defaults ({defaults}) applied to {interface.describe()}; "
        "give thresholds for this problem (evaluate's thresholds input, schema kpi_thresholds)"
    )


def load_model(model_dir: str | Path):
    """The Keras model inside an MLflow model folder (its MLmodel file read by `ModelInterface.of_model`
    first)."""
    import mlflow.tensorflow

    path = Path(model_dir)
    try:
        return mlflow.tensorflow.load_model(str(path))
    except Exception as error:  # MLflow and Keras raise many types for a broken model
        raise UserInputError(f"{path}: cannot load the model ({type(error).__name__}: {error})") from None


def model_function(model):
    """The model's forward pass as one traced function, made once per model: every split and the
    latency samples reuse its traces."""
    import tensorflow as tf

    return tf.function(lambda batch: model(batch, training=False), reduce_retracing=True)


def accuracy(predict, images: np.ndarray, labels: np.ndarray) -> float:
    return float((predict_in_batches(predict, images).argmax(axis=1) == labels).mean())


def score(
    predict, images: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]
) -> tuple[dict[str, Any], tuple]:
    """Report figures (accuracy, per-class precision/recall, confusion matrix, single-image latency)
    of a `model_function` answering `classes` and the mistakes (the 25 most confident wrong rows, all
    predictions, their confidences)."""
    probabilities = predict_in_batches(predict, images)
    predicted = probabilities.argmax(axis=1)
    matrix = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(matrix, (labels.astype(np.int64), predicted), 1)
    per_class = []
    for label, name in enumerate(classes):
        support, predicted_as = int(matrix[label].sum()), int(matrix[:, label].sum())
        per_class.append(
            {
                "class": label,
                "name": name,
                "precision": float(matrix[label, label] / predicted_as) if predicted_as else 0.0,
                "recall": float(matrix[label, label] / support) if support else 0.0,
                "support": support,
            }
        )
    wrong = np.flatnonzero(predicted != labels)
    confidence = probabilities[np.arange(len(labels)), predicted]
    figures = {
        "test_count": len(labels),
        "accuracy": float((predicted == labels).mean()),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "latency": single_image_latency(predict, images),
    }
    return figures, (wrong[np.argsort(-confidence[wrong])][:25], predicted, confidence)


def single_image_latency(predict, images: np.ndarray) -> dict[str, Any]:
    """p50/p99 of one-image calls of the warmed model function (what a scoring request pays)."""
    for image in images[:10]:
        predict(image[None])
    timings = []
    for image in images[:LATENCY_SAMPLES]:
        started = time.perf_counter()
        predict(image[None]).numpy()
        timings.append((time.perf_counter() - started) * 1000)
    return {
        "p50_ms": float(np.percentile(timings, 50)),
        "p99_ms": float(np.percentile(timings, 99)),
        "samples": len(timings),
    }


def evaluate_gates(
    challenger: dict,
    champion: dict | None,
    thresholds: dict,
    *,
    champion_is_challenger: bool = False,
    no_champion: str = "first run: no champion to compare with",
) -> list[dict[str, Any]]:
    """Every KPI threshold with its value, outcome and a sentence a reviewer can read. A challenger
    that is the champion itself (a rerun on unchanged data and code) has nothing to promote; without a
    champion's figures the regression gate is skipped, saying why (`no_champion`)."""

    def gate(name: str, value: float | None, ok: bool | None, reason: str) -> dict[str, Any]:
        outcome = "skipped" if ok is None else "pass" if ok else "fail"
        return {
            "name": name,
            "threshold": thresholds[name],
            "value": value,
            "outcome": outcome,
            "reason": reason,
        }

    accuracy, floor = challenger["accuracy"], thresholds["min_accuracy"]
    gates = [
        gate(
            "min_accuracy",
            accuracy,
            accuracy >= floor,
            f"accuracy {accuracy:.4f} {'>=' if accuracy >= floor else '<'} {floor}",
        )
    ]
    recalls = {row["name"]: row["recall"] for row in challenger["per_class"]}
    weakest = min(recalls, key=recalls.get)
    floor = thresholds["min_class_recall"]
    gates.append(
        gate(
            "min_class_recall",
            recalls[weakest],
            recalls[weakest] >= floor,
            f"lowest recall is class {weakest} at {recalls[weakest]:.4f} "
            f"({'>=' if recalls[weakest] >= floor else '<'} {floor})",
        )
    )
    allowed = thresholds["max_regression"]
    if champion is None:
        gates.append(gate("max_regression", None, None, no_champion))
    elif champion_is_challenger:
        champion_name = f"{champion['name']} v{champion['version']}"
        reason = f"the challenger is the champion {champion_name} itself: nothing to promote"
        gates.append(gate("max_regression", 0.0, False, reason))
    else:
        drop = champion["accuracy"] - accuracy
        gates.append(
            gate(
                "max_regression",
                drop,
                drop <= allowed,
                f"challenger {accuracy:.4f} vs champion {champion['name']} v{champion['version']} "
                f"{champion['accuracy']:.4f} on the same test data: drop {drop:+.4f} "
                f"({'within' if drop <= allowed else 'more than'} the allowed {allowed})",
            )
        )
    p99, limit = challenger["latency"]["p99_ms"], thresholds["max_p99_latency_ms"]
    gates.append(
        gate(
            "max_p99_latency_ms",
            p99,
            p99 <= limit,
            f"p99 single-image latency {p99:.2f} ms ({'<=' if p99 <= limit else '>'} {limit} ms)",
        )
    )
    return gates


def model_card(
    report: dict, manifest: dict, interface: ModelInterface, notes: list[str], unlike: str | None
) -> str:
    """The Markdown page a reviewer reads before approving the model; `notes` are the blessing's
    reasons beyond the gates, `unlike` why production's model was not compared (`champion_unlike`)."""
    verdict = "**Blessed**" if report["blessed"] else "**Not blessed**"
    source = {"given": "the given thresholds file", "mnist_defaults": "the built-in defaults (MNIST's)"}
    lines = [
        f"# Model card: {report['model']['name']}",
        "",
        f"{verdict} by the evaluate gate on {report['generated_at']}.",
        *(line for note in notes for line in ("", f"**{note}.**")),
        "",
        "## Model",
        f"- Takes and answers: {interface.describe()}.",
        "",
        "## Data",
        f"- Test split: {report['test_count']} images of dataset version "
        f"`{report['dataset_version'][:16]}...`"
        " (the test split of the preprocessed data this evaluation was given).",
        f"- Training split: {manifest['splits']['train']['count']} images, validation "
        f"{manifest['splits']['validation']['count']} (stratified, seed {manifest['seed']}).",
        "",
        "## Gates",
        f"Thresholds: {source[report['thresholds_source']]}.",
        "",
        "| gate | threshold | value | outcome | reason |",
        "| --- | --- | --- | --- | --- |",
    ]
    for gate in report["thresholds"]:
        value = "-" if gate["value"] is None else f"{gate['value']:.4f}"
        threshold = "-" if gate["threshold"] is None else gate["threshold"]
        lines.append(f"| {gate['name']} | {threshold} | {value} | {gate['outcome']} | {gate['reason']} |")
    lines += [
        "",
        "## Per-class quality",
        "| class | precision | recall | support |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['name']} | {r['precision']:.4f} | {r['recall']:.4f} | {r['support']} |"
        for r in report["per_class"]
    ]
    champion = report["champion"]
    lines += ["", "## Champion"]
    if champion:
        lines.append(
            f"{champion['name']} v{champion['version']}: accuracy {champion['accuracy']:.4f} "
            "on the same test split."
        )
    elif unlike:
        lines.append(f"Not compared: {unlike}.")
    else:
        lines.append("None: this is the first model (no production version to compare with).")
    lines += ["", *shift.card_lines(report["data_shift"], report["thresholds"])]
    lines += [
        "## Figures",
        "- `confusion_matrix.png`: rows are true classes, columns predictions.",
        "- `misclassified.png`: the most confident mistakes.",
        "",
        f"Generated by {COMPONENT_NAME} {__version__}.",
        "",
    ]
    return "\n".join(lines)
