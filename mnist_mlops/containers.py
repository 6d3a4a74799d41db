"""Build a component's image and run the component inside it, the local analogue of an AML container.

The build context is the component's `environment/` folder plus a wheel of this checkout, exactly what
the Dockerfile expects. Images are tagged by the hash of everything that goes into them, so an
unchanged component is never rebuilt. Runs use `--network none` and bind-mount only the code snapshot
(read-only, as AML mounts it), the inputs (read-only) and the outputs.

Podman is used through `$MNIST_MLOPS_PODMAN` (a command, e.g. `../shared/containers/podman-here`),
falling back to `podman` on the PATH.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from mnist_mlops.errors import UserInputError
from mnist_mlops.ports import component_dir, load_spec
from mnist_mlops.provenance import PROJECT_ROOT
from mnist_mlops.runner import is_artifact, render_command

_SOURCE_FOLDERS = ("mnist_mlops", "components", "schemas", "pipelines")
_CONTEXT_FILES = ("Dockerfile", "conda.yaml")


def podman() -> list[str]:
    return shlex.split(os.environ.get("MNIST_MLOPS_PODMAN", "podman"))


def image_tag(name: str, base_image: str | None) -> str:
    """Content-addressed tag over what goes into the image: the build context files (Dockerfile,
    conda.yaml), the library sources in the wheel and the base image. Components whose environments
    are identical (train and evaluate) therefore share one image, as they share one AML environment.
    """
    digest = hashlib.sha256((base_image or "").encode())
    environment = component_dir(name) / "environment"
    for context_file in _CONTEXT_FILES:
        digest.update(context_file.encode() + (environment / context_file).read_bytes())
    files = sorted(path for folder in _SOURCE_FOLDERS for path in (PROJECT_ROOT / folder).rglob("*.py"))
    files += [*sorted((PROJECT_ROOT / "schemas").glob("*.json")), PROJECT_ROOT / "pyproject.toml"]
    for path in files:
        if "__pycache__" not in path.parts and "tests" not in path.parts:
            digest.update(path.relative_to(PROJECT_ROOT).as_posix().encode())
            digest.update(path.read_bytes())
    return f"localhost/mnist-mlops-env:{digest.hexdigest()[:16]}"


def build_image(name: str, *, base_image: str | None = None) -> str:
    """Build (or reuse) the image of component `name`; returns its tag."""
    if not (PROJECT_ROOT / "pyproject.toml").is_file():
        raise UserInputError("images are built from a source checkout (pyproject.toml not found)")
    tag = image_tag(name, base_image)
    if subprocess.run([*podman(), "image", "exists", tag], check=False).returncode == 0:
        return tag
    with tempfile.TemporaryDirectory(prefix=f"mnist-mlops-{name}-context-") as context:
        shutil.copytree(component_dir(name) / "environment", context, dirs_exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--quiet",
                "--wheel-dir",
                context,
                str(PROJECT_ROOT),
            ],
            check=True,
        )
        build_args = ["--build-arg", f"BASE_IMAGE={base_image}"] if base_image else []
        subprocess.run([*podman(), "build", "--network", "host", *build_args, "-t", tag, context], check=True)
    return tag


def run_in_container(
    name: str,
    tag: str,
    inputs: dict[str, Any],
    outputs: dict[str, Path],
    *,
    services: dict[str, Path] | None = None,
) -> subprocess.CompletedProcess:
    """Run component `name` in image `tag` with no network and only its own folders mounted.

    Inputs are mounted read-only; each output gets a fresh, empty staging folder of its own (never the
    output's parent), whose result is moved into place after the step succeeds. `services` maps a
    container path to a host folder mounted read-write, for what AML reaches over the network (an
    embedded registry, say).
    """
    spec = load_spec(name)
    mounts: list[str] = ["-v", f"{component_dir(name)}:/code:ro"]
    for target, host in (services or {}).items():
        mounts += ["-v", f"{Path(host).resolve()}:{target}"]
    bound_inputs: dict[str, Any] = {}
    for port, value in inputs.items():
        if value is not None and is_artifact(spec["inputs"][port]):
            source = Path(value).resolve()
            target = f"/mnt/inputs/{port}/{source.name}" if source.is_file() else f"/mnt/inputs/{port}"
            mounts += ["-v", f"{source}:{target}:ro"]
            bound_inputs[port] = target
        else:
            bound_inputs[port] = value
    with tempfile.TemporaryDirectory(prefix=f"mnist-mlops-{name}-outputs-") as scratch:
        bound_outputs: dict[str, str] = {}
        for port, path in outputs.items():
            (Path(scratch) / port).mkdir()
            mounts += ["-v", f"{Path(scratch) / port}:/mnt/outputs/{port}"]
            bound_outputs[port] = f"/mnt/outputs/{port}/{Path(path).name}"
        argv = render_command(spec, bound_inputs, bound_outputs)
        result = subprocess.run(
            [*podman(), "run", "--rm", "--network", "none", *mounts, "-w", "/code", tag, *argv],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode == 0:
            for port, path in outputs.items():
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                shutil.move(Path(scratch) / port / Path(path).name, path)
    return result
