"""Run a component's spec command as a Kubeflow Pipelines task and report its output artifacts.

A KFP task learns what it produced from the executor output file named in its executor input (`{{$}}`):
KFP's own Python components write it, and kfp.local reads nothing else, so a container that only wrote
its files would hand no artifact downstream. This wrapper creates each output's parent folder (the
cluster launcher does, kfp.local does not), runs the command unchanged, and on success writes that file
listing every output artifact at its URI. The command's exit code is the task's.

    python -m mnist_mlops.kfp_executor '{{$}}' -- mldesigner execute ...
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from mnist_mlops.atomic import atomic_write_text


def output_paths(executor_input: dict[str, Any]) -> dict[str, str]:
    """Each output artifact's local path, from the executor input's `outputs.artifacts`."""
    found = {}
    for name, listing in (executor_input.get("outputs", {}).get("artifacts") or {}).items():
        (artifact,) = listing["artifacts"]
        found[name] = _local_path(artifact["uri"])
    return found


def _local_path(uri: str) -> str:
    """The path KFP mounts an artifact URI at (gs://b/k -> /gcs/b/k, s3:// -> /s3/, minio:// -> /minio/)."""
    for scheme, mount in (("gs://", "/gcs/"), ("s3://", "/s3/"), ("minio://", "/minio/")):
        if uri.startswith(scheme):
            return mount + uri.removeprefix(scheme)
    return uri


def executor_output(executor_input: dict[str, Any]) -> dict[str, Any]:
    """The executor output listing every output artifact as the executor input named it."""
    artifacts = executor_input.get("outputs", {}).get("artifacts") or {}
    return {
        "artifacts": {
            name: {
                "artifacts": [
                    {
                        "name": artifact.get("name", ""),
                        "uri": artifact["uri"],
                        "metadata": artifact.get("metadata", {}),
                    }
                ]
            }
            for name, listing in artifacts.items()
            for artifact in listing["artifacts"]
        }
    }


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m mnist_mlops.kfp_executor EXECUTOR_INPUT_JSON -- COMMAND...", file=sys.stderr)
        return 2
    try:
        executor_input = json.loads(argv[0])
    except ValueError as error:
        print(f"executor input: not JSON ({error})", file=sys.stderr)
        return 2
    for path in output_paths(executor_input).values():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    code = subprocess.run(argv[2:], check=False).returncode
    output_file = executor_input.get("outputs", {}).get("outputFile")
    if code == 0 and output_file:
        Path(output_file).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(output_file), json.dumps(executor_output(executor_input)))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
