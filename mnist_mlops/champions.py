"""The champion folder that resolve_champion writes and evaluate reads, in one place for both:
`champion.json` (schema `champion_record`); when there is a champion, its registered model in `model/`
and, when it could be fetched, its reference bundle in `reference/` (`mnist_mlops.references`); and
`traffic.json` (schema `traffic_summary`) when the request log had recent traffic."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_mlops import contracts

RECORD = "champion.json"
MODEL = "model"
REFERENCE = "reference"
TRAFFIC = "traffic.json"


@dataclass(frozen=True)
class Champion:
    record: dict[str, Any]
    model: Path | None
    """The registered model folder; None when there is no champion."""
    reference: Path | None
    """The champion's reference bundle; None when there is no champion or it could not be read
    (`record["reference"]["reason"]` says which)."""
    traffic: dict[str, Any] | None
    """What clients sent recently (`traffic_summary`); None when the log had none
    (`record["traffic"]["reason"]` says why)."""


def read_champion(champion: str | Path) -> Champion:
    folder = Path(champion)
    record = contracts.read_json(folder / RECORD, "champion_record")
    return Champion(
        record=record,
        model=folder / MODEL if record["found"] else None,
        reference=folder / REFERENCE if record["reference"]["found"] else None,
        traffic=contracts.read_json(folder / TRAFFIC, "traffic_summary")
        if record["traffic"]["found"]
        else None,
    )
