"""Build a component's environment image and run the component in it, the way Azure ML does.

The build context is the environment folder exactly as azure-ai-ml uploads it (its own ignore-file
logic), built with no build args, so the Dockerfile's fixed base is what runs: where the public image
cannot be pulled, a local stand-in must be tagged under that name beforehand. Images hold third-party
packages only and are tagged by the content of their build context, so an unchanged environment is
never rebuilt and every component that shares it shares the image.

A run mounts the code snapshot (what azure-ai-ml uploads for the spec's `code`) read-only as the
working directory, the inputs read-only and a fresh staging folder per output, and has no network
unless a network (a pod holding a tracking server, say) is given. Like a compute node that pulled the
image once, every run starts read-only from the image, with fresh in-memory /tmp, /mnt and home. With
podman's vfs storage a container would cost a full copy of the image (about 40 s for the model image),
so there a run starts from the image's root filesystem mounted once (`podman image mount`).

Podman is used through `$MNIST_MLOPS_PODMAN` (a command, e.g. `../shared/containers/podman-here`),
falling back to `podman` on the PATH.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

from mnist_mlops.environments import environment_dir
from mnist_mlops.errors import UserInputError
from mnist_mlops.hashing import files_sha256
from mnist_mlops.ports import load_spec
from mnist_mlops.provenance import CODE_VERSION_ENV, code_version
from mnist_mlops.runner import is_artifact, render_command
from mnist_mlops.snapshot import code_root, copy_files, materialize, snapshot_files


def podman() -> list[str]:
    return shlex.split(os.environ.get("MNIST_MLOPS_PODMAN", "podman"))


def environment_of(name: str) -> Path:
    """The build context of the shared environment component `name` runs in (from its spec)."""
    return environment_dir(Path(load_spec(name)["environment"]["build"]["path"]).name)


def uploaded_context(folder: Path) -> dict[str, Path]:
    """What azure-ai-ml uploads as an environment's build context: relative path -> file."""
    from azure.ai.ml._utils._asset_utils import get_ignore_file, get_upload_files_from_folder

    files = get_upload_files_from_folder(folder, ignore_file=get_ignore_file(folder))
    return {relative: Path(absolute) for absolute, relative in files}


def image_tag(folder: Path) -> str:
    """Content-addressed tag over the build context as uploaded."""
    return f"localhost/mnist-mlops-{Path(folder).name}:{files_sha256(uploaded_context(folder))[:16]}"


def build_image(folder: Path) -> str:
    """Build (or reuse) the image of an environment build context with no build args; returns its tag."""
    tag = image_tag(folder)
    if subprocess.run([*podman(), "image", "exists", tag], check=False).returncode == 0:
        return tag
    with tempfile.TemporaryDirectory(prefix="mnist-mlops-context-") as context:
        copy_files(uploaded_context(folder), Path(context))
        subprocess.run([*podman(), "build", "--network", "host", "-t", tag, context], check=True)
    return tag


CODE = "/mnt/code"
"""Where the code snapshot is mounted (or, in a job image, copied): the job's working directory."""
JOB_DOCKERFILE = (
    f"FROM {{base}}\nCOPY code/ {CODE}/\nWORKDIR {CODE}\n"
    f"ENV {CODE_VERSION_ENV}={{code_version}}\nLABEL org.opencontainers.image.revision={{code_version}}\n"
)
"""A job image: an environment image with the code snapshot as working directory, for orchestrators
that have no code snapshot of their own (Kubeflow). Python finds the code there through the
environment's `PYTHONPATH=.`."""


def job_image_tag(folder: Path, registry: str = "localhost/", code: dict[str, Path] | None = None) -> str:
    """Content-addressed tag of the job image of an environment: over its build context, the code
    snapshot (`code`, default this code's) and the code version the image is stamped with, so a change
    to any of them is a new image (never a reused one with an old stamp) and an unchanged one is never
    rebuilt."""
    files = {f"environment/{name}": path for name, path in uploaded_context(folder).items()}
    code = snapshot_files(code_root()) if code is None else code
    files |= {f"code/{name}": path for name, path in code.items()}
    digest = hashlib.sha256(f"{files_sha256(files)}\0{code_version()}".encode()).hexdigest()
    return f"{registry}mnist-mlops-{Path(folder).name}-job:{digest[:16]}"


def build_job_image(folder: Path, registry: str = "localhost/") -> str:
    """Build (or reuse) the job image of an environment over this code; returns its tag."""
    code = snapshot_files(code_root())  # listed once for the tag and the copy
    tag = job_image_tag(folder, registry, code)
    if subprocess.run([*podman(), "image", "exists", tag], check=False).returncode == 0:
        return tag
    base = build_image(folder)
    with tempfile.TemporaryDirectory(prefix="mnist-mlops-job-context-") as context:
        copy_files(code, Path(context) / "code")
        dockerfile = JOB_DOCKERFILE.format(base=base, code_version=code_version())
        (Path(context) / "Dockerfile").write_text(dockerfile)
        subprocess.run([*podman(), "build", "--network", "none", "-t", tag, context], check=True)
    return tag


def image_root(tag: str) -> str:
    """The image's root filesystem on this machine (mounted once; runs use it read-only)."""
    result = subprocess.run([*podman(), "image", "mount", tag], capture_output=True, text=True, check=True)
    return result.stdout.strip()


@cache
def storage_driver() -> str:
    """Podman's storage driver here: with `vfs` a container costs a full copy of its image, so runs
    start from the image's mounted root filesystem instead; `overlay` shares the image's layers."""
    result = subprocess.run(
        [*podman(), "info", "--format", "{{.Store.GraphDriverName}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def image_environment(tag: str) -> dict[str, str]:
    """The environment variables the image's configuration sets (PATH, PYTHONPATH, ...)."""
    result = subprocess.run(
        [*podman(), "image", "inspect", "--format", "{{json .Config.Env}}", tag],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(item.split("=", 1) for item in json.loads(result.stdout) or [])


def run_in_container(
    name: str,
    tag: str,
    inputs: dict[str, Any],
    outputs: dict[str, Path],
    *,
    services: dict[str, Path] | None = None,
    network: str = "none",
    environment: dict[str, str] | None = None,
    snapshot: Path | None = None,
    spec_path: Path | None = None,
) -> subprocess.CompletedProcess:
    """Run component `name`'s spec command in image `tag` over the code snapshot.

    Inputs are mounted read-only; each output gets a fresh, empty staging folder of its own (never the
    output's parent), whose result is moved into place after the step succeeds. `services` maps a
    container path to a host folder mounted read-write, for what Azure ML reaches over the network (an
    embedded registry, say); `environment` is set in the container as Azure ML sets its variables;
    `snapshot` is an already materialized code snapshot (one is made otherwise); `spec_path` a spec
    other than the installed one (a compiled pipeline's, say).
    """
    spec = load_spec(spec_path or name)
    with tempfile.TemporaryDirectory(prefix=f"mnist-mlops-{name}-") as scratch:
        code = snapshot or materialize(Path(scratch) / "code")
        mounts: list[str] = ["-v", f"{Path(code).resolve()}:{CODE}:ro"]
        for target, host in (services or {}).items():
            mounts += ["-v", f"{Path(host).resolve()}:{target}"]
        bound_inputs: dict[str, Any] = {}
        for port, value in inputs.items():
            if port not in spec["inputs"]:
                raise UserInputError(f"{spec['name']}: no input named {port!r}")
            if value is not None and is_artifact(spec["inputs"][port]):
                source = Path(value).resolve()
                target = f"/mnt/inputs/{port}/{source.name}" if source.is_file() else f"/mnt/inputs/{port}"
                mounts += ["-v", f"{source}:{target}:ro"]
                bound_inputs[port] = target
            else:
                bound_inputs[port] = value
        bound_outputs: dict[str, str] = {}
        for port, path in outputs.items():
            (Path(scratch) / "outputs" / port).mkdir(parents=True)
            mounts += ["-v", f"{Path(scratch) / 'outputs' / port}:/mnt/outputs/{port}"]
            bound_outputs[port] = f"/mnt/outputs/{port}/{Path(path).name}"
        argv = render_command(spec, bound_inputs, bound_outputs)
        variables = image_environment(tag) | (environment or {})
        settings = [arg for key, value in variables.items() for arg in ("-e", f"{key}={value}")]
        fresh = [arg for folder in ("/tmp", "/mnt", "/root") for arg in ("--tmpfs", folder)]
        command = [*podman(), "run", "--rm", "--network", network, "--read-only", *fresh, *mounts, *settings]
        image = ["--rootfs", image_root(tag)] if storage_driver() == "vfs" else [tag]
        command += ["-w", CODE, *image, *argv]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode == 0:
            for port, path in outputs.items():
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                shutil.move(Path(scratch) / "outputs" / port / Path(path).name, path)
    return result
