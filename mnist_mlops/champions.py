"""The champion folder that resolve_champion writes and evaluate reads, in one place for both:
`champion.json` (schema `champion_record`) and, when there is a champion, its registered model in
`model/`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mnist_mlops import contracts

RECORD = "champion.json"
MODEL = "model"


def read_champion(champion: str | Path) -> tuple[dict[str, Any], Path | None]:
    """The record of a champion folder and its model folder (None when there is no champion)."""
    folder = Path(champion)
    record = contracts.read_json(folder / RECORD, "champion_record")
    return record, (folder / MODEL if record["found"] else None)
