"""Documents of a hand-made run folder, shared by the tests that read one (lineage, the run report)."""

from __future__ import annotations


def first_run_blessing(run_id: str, dataset_version: str, *, blessed: bool, reasons: list[str]) -> dict:
    """evaluate's blessing of a first run: no champion, so no reference to judge a data shift against."""
    return {
        "schema_version": 1,
        "blessed": blessed,
        "reasons": reasons,
        "first_run_without_champion": True,
        "model_uri": f"runs/{run_id}/train/model",
        "dataset_version": dataset_version,
        "evaluation_report_sha256": "b" * 64,
        "data_shift": {
            "decision": "no_reference",
            "accepted": False,
            "reference_model_version": None,
            "reference_dataset_version": None,
            "reasons": ["max_data_shift: no champion to compare with"],
        },
        "generated_at": "2026-12-07T01:03:00Z",
    }
