"""Resolve and download a registry reference in a short-lived child process, so the server stays MLflow-free.

`import mlflow` alone takes about 200 MB of resident memory (pandas, SQLAlchemy, its Azure ML plugin)
and two seconds. A scoring worker needs none of it to answer requests: it needs one local model folder.
So the workers of a server started on a registry reference run this module as a child process, which
resolves the reference (ready versions only, as `RegistryModels.resolve`), downloads the version into
a folder the worker gives and exits, handing its memory back. This is what Azure ML does for an online
deployment: the platform puts the model folder in place, the server loads it from disk.

    python -m mnist_mlops.serving.fetch models:/name@alias --registry URI [--into FOLDER]

prints one JSON line, ``{"version": "3"}``; without ``--into`` it only resolves. A reference that
cannot be served is exit status 2 with the reason on stderr, as every user error.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from mnist_mlops.errors import USER_ERROR_EXIT_CODE, UserInputError, exit_on_user_error
from mnist_mlops.serving.server import stop_with

FETCH_SECONDS = 600.0
"""The most a resolve and download may take (a large model from a remote registry), then it is an error."""


def fetch_in_child(model_uri: str, registry: str, into: Path | None = None) -> str:
    """The version `model_uri` names now, downloaded into `into` (an MLflow model folder, replacing what
    was there) when given; all of it in a child process. Its user errors come back as UserInputError."""
    command = [sys.executable, "-m", __name__, model_uri, "--registry", registry]
    if into is not None:
        command += ["--into", str(into)]
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=FETCH_SECONDS, env=environment, check=False
        )
    except subprocess.TimeoutExpired:
        raise UserInputError(
            f"{model_uri}: resolving and downloading took over {FETCH_SECONDS:.0f} s"
        ) from None
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()
        reason = said[-1].removeprefix("error: ") if said else f"exit status {done.returncode}"
        if done.returncode != USER_ERROR_EXIT_CODE:
            reason = f"{reason} (fetch exited with status {done.returncode})"
        raise UserInputError(reason)
    return json.loads(done.stdout.strip().splitlines()[-1])["version"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="models:/<name>/<version> or models:/<name>@<alias>")
    parser.add_argument("--registry", required=True, help="MLflow registry URI")
    parser.add_argument("--into", type=Path, help="folder to download the version's MLflow model into")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    stop_with(os.getppid())  # a worker stopped mid-fetch takes its fetch with it
    with exit_on_user_error():
        from mlflow.exceptions import MlflowException

        from mnist_mlops.serving.scorer import RegistryModels

        models = RegistryModels(args.model, args.registry)
        try:
            version = models.resolve()
            if args.into is not None:
                models.download(version, args.into)
        except MlflowException as error:  # e.g. no such model or version
            raise UserInputError(f"{args.model}: {error.message}") from None
    print(json.dumps({"version": version}), flush=True)


if __name__ == "__main__":
    main()
