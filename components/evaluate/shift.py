"""evaluate's data-shift gates: is the new training data still like the data production was trained on
and like what clients send now, and is the challenger as good as the champion on the champion's own
test split? A model can beat the champion on a new test split that no client sends (issue 15).

Framework-free: the executor scores the models. A gate without anything to compare with says
"no_reference" (never a silent pass); a gate that would fail says "accepted" when
evaluate.accept_data_shift was set, an explicit decision recorded in the blessing and the model card.

One shift passes by default: when recent traffic shows that clients moved (unlike production's training
data, like the new data), the new data follows them ("followed_traffic"): the retraining a drift alert
asks for. Production's own test split then no longer describes what clients send, so a drop there is
reported, not judged. Without enough traffic there is no such evidence and the shift stops promotion.

Production's data is only compared with data of the same kind: a reference of another image shape or
other classes is "no_reference" naming both, as without a champion. A production model that takes or
answers something else than the challenger is the largest shift of all: promoting the challenger under
the same name changes what every client must send and gets back, so it fails the training-data gate
(naming both) unless accepted, and its traffic is not compared.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from mnist_mlops import data_shift, references
from mnist_mlops.champions import Champion
from mnist_mlops.errors import UserInputError
from mnist_mlops.model_interface import ModelInterface

DEFAULT_REFERENCE_REGRESSION = 0.01
"""Largest allowed accuracy drop below the champion on its own test split when the thresholds file
sets none: one point, well above the noise of a retrained MNIST model."""
ACCEPTED = "accepted by evaluate.accept_data_shift: "


@dataclass(frozen=True)
class Reference:
    """The production model's training data and test split, or why evaluate has none."""

    reason: str
    model: str | None = None
    """e.g. "mnist-mlops v1"."""
    model_version: str | None = None
    dataset_version: str | None = None
    baseline: dict[str, Any] | None = None
    test_split: tuple[np.ndarray, np.ndarray] | None = None


def read_reference(champion: Champion | None, interface: ModelInterface, unlike: str | None) -> Reference:
    """The champion's reference bundle, read and verified, when it holds data of the challenger's
    `interface`. A missing or unreadable one is a warning (stderr) and a Reference without data: the
    registry may outlive a run's artifacts. `unlike`: why production's model cannot be compared with
    the challenger (then neither is its data), None when it can."""
    if champion is None:
        return Reference("no champion given")
    record = champion.record
    if not record["found"]:
        return Reference(record["reference"]["reason"])
    if unlike is not None:
        return Reference(unlike)
    model = f"{record['model_name']} v{record['version']}"
    if champion.reference is None:
        return _unusable(record["reference"]["reason"])
    try:
        manifest, baseline = references.read_bundle(champion.reference)
        held = ModelInterface.of_dataset(manifest)
        if held != interface:
            return Reference(
                f"{model}'s reference holds {held.describe()}; this model takes {interface.describe()}"
            )
        split = references.test_split(champion.reference)
    except (UserInputError, OSError) as error:
        return _unusable(f"{model}'s reference in {champion.reference} cannot be read ({error})")
    return Reference(
        record["reference"]["reason"], model, record["version"], manifest["dataset_version"], baseline, split
    )


def judge(
    champion: Champion | None,
    reference: Reference,
    training: dict[str, Any],
    split_accuracy: tuple[float, float] | None,
    thresholds: dict[str, Any],
    *,
    accept: bool,
    unlike: str | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The three gates and the report's `data_shift` section. `training` is the new training data's
    baseline, `split_accuracy` (challenger, champion) on the reference test split; `unlike` why
    production's model (so what its clients send) cannot be compared with the challenger."""
    limits = data_shift.DEFAULT_LIMITS | thresholds.get("max_data_shift", {})
    training_findings = (
        data_shift.compare_training_data(reference.baseline, training, limits)
        if reference.baseline is not None
        else []
    )
    traffic = champion.traffic if champion is not None and unlike is None else None
    traffic_findings = (
        data_shift.compare_with_traffic(traffic, training, limits) if traffic is not None else None
    )
    production_findings = (
        data_shift.compare_with_traffic(traffic, reference.baseline, limits)
        if traffic is not None and reference.baseline is not None
        else None
    )
    clients_moved = _clients_moved(reference, traffic_findings, production_findings)
    followed = clients_moved if data_shift.shifted(training_findings) else None
    gates = [
        _training_data_gate(reference, training_findings, followed, accept, unlike),
        _traffic_gate(champion, traffic, traffic_findings, accept, unlike),
        _reference_split_gate(reference, split_accuracy, thresholds, followed, accept),
    ]
    section = {
        "decision": _decision(gates, followed_traffic=followed is not None),
        "accepted": accept,
        "reference": {
            "model_version": reference.model_version,
            "dataset_version": reference.dataset_version,
            "found": reference.baseline is not None,
            "reason": reference.reason,
        },
        "training_data": training_findings,
        "traffic": None
        if traffic is None
        else {"images": traffic["images"], "time_range": traffic["time_range"], "findings": traffic_findings},
        "reference_split": None
        if split_accuracy is None or reference.test_split is None
        else {
            "dataset_version": reference.dataset_version,
            "test_count": len(reference.test_split[1]),
            "challenger_accuracy": split_accuracy[0],
            "champion_accuracy": split_accuracy[1],
        },
    }
    return gates, section


def blessing_record(section: dict[str, Any], gates: list[dict[str, Any]]) -> dict[str, Any]:
    """The blessing's `data_shift` from the section and the three gates `judge` returned: what register
    copies into the registry's tags and lineage."""
    return {
        "decision": section["decision"],
        "accepted": section["accepted"],
        "reference_model_version": section["reference"]["model_version"],
        "reference_dataset_version": section["reference"]["dataset_version"],
        "reasons": [f"{gate['name']}: {gate['reason']}" for gate in gates],
    }


def card_lines(section: dict[str, Any], gates: list[dict[str, Any]]) -> list[str]:
    """The model card's "Data shift" section."""
    reasons = {gate["name"]: gate["reason"] for gate in gates}
    reference = section["reference"]
    lines = ["## Data shift", f"- Decision: **{section['decision']}**."]
    lines.append(
        f"- Reference: {reference['reason']}."
        if reference["found"]
        else f"- Reference: none ({reference['reason']})."
    )
    if section["training_data"]:
        lines += [
            "",
            "| measure | value | limit | shifted | mean (production's -> new) |",
            "| --- | --- | --- | --- | --- |",
        ]
        for finding in section["training_data"]:
            means = "-" if finding["means"] is None else " -> ".join(f"{m:.4g}" for m in finding["means"])
            measure = f"{finding['feature']} {finding['measure']}"
            shifted = "yes" if finding["shifted"] else "no"
            lines.append(
                f"| {measure} | {finding['value']:.4g} | {finding['limit']:g} | {shifted} | {means} |"
            )
        lines.append("")
    lines.append(f"- Traffic: {reasons['max_traffic_shift']}")
    lines.append(f"- Production's own test split: {reasons['max_reference_regression']}")
    if section["decision"] == "accepted":
        lines.append(
            "- **Promoted although the data shifted: evaluate.accept_data_shift was set, an explicit "
            "decision recorded in the blessing and the registry's tags.**"
        )
    if section["decision"] == "followed_traffic":
        lines.append(
            "- **The training data shifted from production's in step with what clients send now** "
            "(see the training-data gate's reason)."
        )
    return [*lines, ""]


def _unusable(reason: str) -> Reference:
    print(f"warning: {reason}", file=sys.stderr, flush=True)
    return Reference(reason)


def _clients_moved(
    reference: Reference,
    traffic_findings: list[dict[str, Any]] | None,
    production_findings: list[dict[str, Any]] | None,
) -> str | None:
    """Evidence that clients moved with the data, in words: recent traffic beyond the limits from
    production's training data and within them from the new data. None without it."""
    if traffic_findings is None or production_findings is None or data_shift.shifted(traffic_findings):
        return None
    away = data_shift.shifted(production_findings)
    if not away:
        return None
    evidence = "; ".join(data_shift.describe(finding) for finding in away)
    return f"what clients send now moved away from {reference.model}'s training data ({evidence})"


def _training_data_gate(
    reference: Reference,
    findings: list[dict[str, Any]],
    followed: str | None,
    accept: bool,
    unlike: str | None,
) -> dict[str, Any]:
    """`followed`: the evidence that the shift follows the clients (it then passes), else None."""
    if unlike is not None:
        reason = (
            f"{unlike}: promoting it under the same name changes what every client must send and gets back"
            " (register it under a model_name of its own, or accept the change)"
        )
        return _gate("max_data_shift", None, None, False, reason, accept)
    if not findings:
        return _gate("max_data_shift", None, None, None, reference.reason, accept)
    source = f"{reference.model}'s (dataset {reference.dataset_version[:12]})"
    shifted, within = f"training data shifted from {source}", f"training data like {source}"
    gate = _findings_gate("max_data_shift", findings, shifted, within, accept and followed is None)
    if followed is not None:
        gate |= {"outcome": "pass", "reason": f"{gate['reason']}; in step with the clients: {followed}"}
    return gate


def _traffic_gate(
    champion: Champion | None,
    traffic: dict[str, Any] | None,
    findings: list[dict[str, Any]] | None,
    accept: bool,
    unlike: str | None,
) -> dict[str, Any]:
    if traffic is None or findings is None:
        reason = unlike or (
            champion.record["traffic"]["reason"] if champion is not None else "no champion given"
        )
        return _gate("max_traffic_shift", None, None, None, reason, accept)
    window = traffic["time_range"]
    seen = f"what clients sent ({traffic['images']} images, {window['from']} to {window['to']})"
    return _findings_gate(
        "max_traffic_shift", findings, f"training data unlike {seen}", f"training data like {seen}", accept
    )


def _findings_gate(
    name: str, findings: list[dict[str, Any]], shifted_text: str, within_text: str, accept: bool
) -> dict[str, Any]:
    """Fails naming every shifted measure with its size; passes naming the one closest to its limit."""
    shifted, worst = data_shift.shifted(findings), data_shift.worst(findings)
    if shifted:
        reason = f"{shifted_text}: " + "; ".join(data_shift.describe(finding) for finding in shifted)
    else:
        reason = f"{within_text}: closest to its limit is {data_shift.describe(worst)}"
    return _gate(name, worst["limit"], worst["value"], not shifted, reason, accept)


def _reference_split_gate(
    reference: Reference,
    split_accuracy: tuple[float, float] | None,
    thresholds: dict[str, Any],
    followed: str | None,
    accept: bool,
) -> dict[str, Any]:
    allowed = thresholds.get("max_reference_regression", DEFAULT_REFERENCE_REGRESSION)
    if split_accuracy is None or reference.test_split is None:
        reason = f"no test split of production's to score on: {reference.reason}"
        return _gate("max_reference_regression", allowed, None, None, reason, accept)
    challenger, champion = split_accuracy
    drop = champion - challenger
    ok = drop <= allowed
    reason = (
        f"challenger {challenger:.4f} vs champion {reference.model} {champion:.4f} on the champion's own "
        f"test split ({len(reference.test_split[1])} images of dataset {reference.dataset_version[:12]}): "
        f"drop {drop:+.4f} ({'within' if ok else 'more than'} the allowed {allowed})"
    )
    if not ok and followed is not None:
        reason += "; not judged: that split no longer describes what clients send"
        return {
            **_gate("max_reference_regression", allowed, drop, None, reason, accept),
            "outcome": "skipped",
        }
    return _gate("max_reference_regression", allowed, drop, ok, reason, accept)


def _gate(
    name: str, threshold: float | None, value: float | None, ok: bool | None, reason: str, accept: bool
) -> dict[str, Any]:
    if ok is None:
        outcome = "no_reference"
    elif ok:
        outcome = "pass"
    elif accept:
        outcome, reason = "accepted", ACCEPTED + reason
    else:
        outcome = "fail"
    return {"name": name, "threshold": threshold, "value": value, "outcome": outcome, "reason": reason}


def _decision(gates: list[dict[str, Any]], *, followed_traffic: bool) -> str:
    outcomes = {gate["name"]: gate["outcome"] for gate in gates}
    if "fail" in outcomes.values():
        return "shifted"
    if "accepted" in outcomes.values():
        return "accepted"
    if outcomes["max_data_shift"] == "no_reference":
        return "no_reference"
    return "followed_traffic" if followed_traffic else "within_limits"
