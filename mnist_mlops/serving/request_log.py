"""What the scoring server records per request, for monitoring: compact, schema'd, rotating.

One JSON line per request (`request_record` schema): id, time, model version, HTTP status, latency,
and for each image its mean intensity and ink fraction (the features preprocess baselined), the
predicted class and its confidence. Never the payload itself. Each server worker process writes its
own file (``requests-<pid>.jsonl`` in the log folder), so workers never interleave or rotate each
other's files; a file past `max_bytes` is renamed with a timestamp and a fresh one started, and the
oldest are removed beyond `keep` files per worker.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from mnist_mlops.features import ink_fraction, mean_intensity


class RequestLog:
    def __init__(self, folder: Path, *, max_bytes: int = 10 * 1024 * 1024, keep: int = 5) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.keep = keep
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def path(self) -> Path:
        return self.folder / f"requests-{os.getpid()}.jsonl"

    def record(
        self,
        *,
        model_name: str,
        model_version: str,
        status: int,
        started: float,
        images: np.ndarray | None = None,
        probabilities: np.ndarray | None = None,
    ) -> None:
        entry = {
            "schema_version": 1,
            "request_id": uuid.uuid4().hex,
            "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "model_name": model_name,
            "model_version": model_version,
            "status": status,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            "images": [],
        }
        if images is not None and probabilities is not None:
            entry["images"] = [
                {
                    "mean_intensity": round(float(mean), 3),
                    "ink_fraction": round(float(ink), 4),
                    "class": int(c),
                    "confidence": round(float(p), 4),
                }
                for mean, ink, c, p in zip(
                    mean_intensity(images),
                    ink_fraction(images),
                    probabilities.argmax(axis=1),
                    probabilities.max(axis=1),
                    strict=True,
                )
            ]
        self._append(json.dumps(entry, separators=(",", ":")) + "\n")

    def _append(self, line: str) -> None:
        path = self.path
        if path.exists() and path.stat().st_size + len(line) > self.max_bytes:
            path.rename(path.with_name(f"{path.stem}.{time.time_ns()}.jsonl"))
            rotated = sorted(self.folder.glob(f"{path.stem}.*.jsonl"))
            for old in rotated[: max(len(rotated) - self.keep, 0)]:
                old.unlink(missing_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line)
