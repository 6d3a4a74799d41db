"""Publish the components to Azure ML as versioned assets and submit the pipeline, from a source checkout.

Each published version carries a `content_hash` tag over everything that defines the component's
behaviour (`snapshot.component_fingerprint`), so publishing again is a no-op until something changes,
and a change gets the next patch version automatically. What is published is the checked-in spec
loaded from the code snapshot, so the service uploads the same code and builds the same shared
environment folder as every other entry point (`mnist_mlops.snapshot`).

What was NOT exercised: no Azure workspace or registry is reachable from where this was written, so
nothing was ever published or submitted for real. The entities are the SDK's own (`load_component`,
the dsl `PipelineJob`, `MLClient`), validated offline, and the call sequences were checked against a
recording client. Authentication, code and environment uploads, the AML image build, registry
discovery (an `MLClient` for a registry contacts Azure as it is constructed), quotas and the service's
own validation are untested.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError

from mnist_mlops.artifacts import artifact_of
from mnist_mlops.errors import UserInputError
from mnist_mlops.ports import check_value, component_names, load_spec
from mnist_mlops.runner import NODE_OUTPUT, PARENT_INPUT
from mnist_mlops.snapshot import code_root, component_fingerprint

if TYPE_CHECKING:
    from azure.ai.ml import MLClient
    from azure.ai.ml.entities import Component, PipelineJob

HASH_TAG = "content_hash"
_VERSION = re.compile(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?")


def ml_client(
    config: Path | None = None,
    subscription_id: str | None = None,
    resource_group: str | None = None,
    workspace: str | None = None,
    registry_name: str | None = None,
) -> MLClient:
    """An MLClient (`azure_identity.credential`) for a workspace, or for an AML registry to publish to.

    Values come from `config` (the `config.json` the studio downloads, as `MLClient.from_config` reads
    it) and explicit arguments override them, so a config can be reused for another workspace.
    """
    values = {
        "subscription_id": subscription_id,
        "resource_group": resource_group,
        "workspace_name": workspace,
    }
    source = "the arguments"
    if config is not None:
        source = f"the arguments or {config}"
        file_values = _read_config(Path(config))
        values = {key: value or file_values.get(key) for key, value in values.items()}
    required = ["subscription_id", "resource_group"] + ([] if registry_name else ["workspace_name"])
    missing = [key for key in required if not (isinstance(values[key], str) and values[key].strip())]
    if missing:
        raise UserInputError(f"Azure ML {', '.join(missing)} not given (expected in {source})")
    try:
        uuid.UUID(values["subscription_id"].strip())
    except ValueError:
        raise UserInputError(f"subscription_id {values['subscription_id']!r} is not a GUID") from None
    from azure.ai.ml import MLClient

    from mnist_mlops.azure_identity import credential

    scope = (
        {"registry_name": registry_name} if registry_name else {"workspace_name": values["workspace_name"]}
    )
    try:
        return MLClient(
            credential=credential(),
            subscription_id=values["subscription_id"].strip(),
            resource_group_name=values["resource_group"].strip(),
            **{key: value.strip() for key, value in scope.items()},
        )
    except ClientAuthenticationError as error:  # only a registry client authenticates while constructed
        first_line = str(error).splitlines()[0]
        raise UserInputError(
            f"could not sign in to Azure for registry {registry_name!r}: {first_line}"
        ) from None


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserInputError(f"{path}: Azure ML config file not found")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserInputError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise UserInputError(
            f"{path}: expected a JSON object with subscription_id, resource_group, workspace_name"
        )
    return data


def content_hash(component: str, root: Path | None = None) -> str:
    """The component's fingerprint (`snapshot.component_fingerprint`) in the source tree `root`: what
    defines its behaviour, by relative path, so it is the same on any machine."""
    folder = (root or code_root()) / "components" / component
    if not (folder / "component.py").is_file():
        raise UserInputError(
            f"no component {component!r} in {folder.parent} (known: {', '.join(component_names())})"
        )
    return component_fingerprint(component, root)


def _version_key(version: str) -> tuple[int, int, int] | None:
    """semver x.y.z as a sortable tuple; "1" and "1.2" count as 1.0.0 and 1.2.0, anything else as None."""
    match = _VERSION.fullmatch(str(version))
    if match is None:
        return None
    major, minor, patch = (int(part or 0) for part in match.groups())
    return major, minor, patch


def next_version(spec_version: str, published: Iterable[str]) -> str:
    """The spec's version if it is above every published one, else the highest published with patch + 1.

    Versions that are not numeric (x, x.y or x.y.z) cannot be ordered and are not bumped from.
    """
    spec_key = _version_key(spec_version)
    if spec_key is None:
        raise UserInputError(f"component version {spec_version!r} is not semver (x.y.z)")
    keys = [key for key in map(_version_key, published) if key is not None]
    if not keys or spec_key > max(keys):
        return spec_version
    major, minor, patch = max(keys)
    return f"{major}.{minor}.{patch + 1}"


def _published(client: MLClient, name: str) -> list[Component]:
    """Every version of the asset, archived ones too: their version numbers are taken."""
    from azure.ai.ml.constants import ListViewType

    try:
        return list(client.components.list(name=name, list_view_type=ListViewType.ALL))
    except ResourceNotFoundError:  # never published
        return []


def spec_files(stage: str) -> list[Path]:
    """A stage's Azure ML specs in the code snapshot: spec.yaml, then the ones its parallel.py generates
    (`authoring.parallel_specs`: batch_score's parallel component and its merge)."""
    folder = code_root() / "components" / stage
    if not (folder / "component.py").is_file():
        raise UserInputError(
            f"no component {stage!r} in {folder.parent} (known: {', '.join(component_names())})"
        )
    return [folder / "spec.yaml", *sorted(folder.glob("*_spec.yaml"))]


def spec_file_of(name: str) -> Path:
    """The spec file in the code snapshot of our component `name` (`mnist_mlops_<stage>[_<kind>]`)."""
    for stage in component_names():
        for path in spec_files(stage):
            if yaml.safe_load(path.read_text())["name"] == name:
                return path
    raise UserInputError(f"component {name!r}: no spec of that name under {code_root() / 'components'}")


def publish(
    client: MLClient, *, components: Iterable[str] | None = None, dry_run: bool = False
) -> list[dict[str, str | None]]:
    """Register each component (stage name; all by default), every spec of it (`spec_files`), as a named,
    versioned asset if it changed.

    A component whose highest published version carries the same content hash is left alone
    ("unchanged"); otherwise it is created at `next_version` with the hash as a tag ("published", or
    "would publish" with `dry_run`, which creates nothing). The version reported
    is the one the service returned.
    """
    from azure.ai.ml import load_component

    stages = list(components) if components is not None else component_names()
    results: list[dict[str, str | None]] = []
    digests = {stage: content_hash(stage) for stage in stages}
    for stage, spec_file in [(name, path) for name in stages for path in spec_files(name)]:
        digest = digests[stage]
        spec = yaml.safe_load(spec_file.read_text())
        published = _published(client, spec["name"])
        ordered = [entity for entity in published if _version_key(entity.version) is not None]
        latest = max(ordered, key=lambda entity: _version_key(entity.version), default=None)
        previous = latest.version if latest is not None else None
        result = {"name": spec["name"], "content_hash": digest, "previous_version": previous}
        if latest is not None and (latest.tags or {}).get(HASH_TAG) == digest:
            results.append({**result, "version": previous, "action": "unchanged"})
            continue
        version = next_version(str(spec["version"]), [entity.version for entity in published])
        if dry_run:
            results.append({**result, "version": version, "action": "would publish"})
            continue
        entity = load_component(spec_file)  # as `az ml component create -f` loads it
        entity.version = version
        entity.tags = {**(entity.tags or {}), HASH_TAG: digest}
        created = client.components.create_or_update(entity)
        results.append({**result, "version": created.version, "action": "published"})
    return results


def submit(
    client: MLClient, pipeline_job: PipelineJob, *, experiment_name: str, stream: bool = True
) -> dict[str, str | None]:
    """Validate the pipeline offline, submit it, and (with `stream`) follow it to the end.

    Returns the name, status and studio URL of the job the service returned; with `stream`, the status
    is re-read after the run ends. A failed run raises the SDK's JobException from `stream`.
    """
    problems = validation_problems(pipeline_job)
    if problems:
        raise UserInputError("the pipeline job is invalid: " + "; ".join(problems))
    job = client.jobs.create_or_update(pipeline_job, experiment_name=experiment_name)
    if stream:
        client.jobs.stream(job.name)
        job = client.jobs.get(job.name)
    return {"name": job.name, "status": job.status, "studio_url": job.studio_url}


def validation_problems(pipeline_job: PipelineJob) -> list[str]:
    """The SDK's offline validation, then what it lets through, which AML would only fail inside a step
    after waiting for compute: pipeline inputs declared without a default and left unset (the SDK infers
    such an input optional when it only feeds optional ports, as `raw_data` feeds ingest's
    `source_data`), and parameters of this project's components outside their spec's type, min/max or
    enum."""
    result = pipeline_job._validate()
    if not result.passed:
        return [f"{where}: {message}" for where, message in result.error_messages.items()]
    data = pipeline_job._to_dict()
    declared = getattr(getattr(pipeline_job, "component", None), "inputs", None) or {}
    values = restore_booleans(data.get("inputs") or {}, declared)
    problems = [
        f"pipeline input {name} is required"
        for name, definition in declared.items()
        if (not definition.optional or getattr(definition, "_is_inferred_optional", False))
        and definition.default is None
        and values.get(name) is None
    ]
    specs = {spec["name"]: spec for spec in map(load_spec, component_names())}
    for node_name, node in pipeline_job.jobs.items():
        spec = specs.get(getattr(_component_of(node), "name", None))
        if spec is None:  # a component by reference, or not one of ours
            continue
        problems += _search_space_problems(node_name, node, spec)
        for port, value in (data["jobs"][node_name].get("inputs") or {}).items():
            if isinstance(value, dict):
                reference = PARENT_INPUT.fullmatch(str(value.get("path", "")))
                value = values.get(reference.group(1)) if reference else None
            if port not in spec["inputs"] or value is None or isinstance(value, dict) or "${{" in str(value):
                continue  # an asset, an unset optional, or an expression AML resolves
            if spec["inputs"][port]["type"] == "boolean" and value in (0, 1):
                value = bool(value)  # dumped as 0/1 by the SDK, see restore_booleans
            try:
                check_value(spec["name"], port, spec["inputs"][port], value)
            except UserInputError as error:
                problems.append(f"jobs.{node_name}: {error}")
    return problems + edge_problems(pipeline_job)


def _component_of(node: Any) -> Any:
    """The component a node runs: a sweep node's is its trial."""
    from azure.ai.ml.entities._builders.sweep import Sweep

    return node.trial if isinstance(node, Sweep) else node.component


def _search_space_problems(node_name: str, node: Any, spec: dict[str, Any]) -> list[str]:
    """A sweep node's search space against the trial's spec: every port a parameter of it, every choice
    and every range's ends within its type, min/max and enum (a log range's ends are natural logs)."""
    import math

    from azure.ai.ml.sweep import Choice, LogUniform, Uniform

    problems = []
    for port, space in (getattr(node, "search_space", None) or {}).items():
        if port not in spec["inputs"]:
            problems.append(f"jobs.{node_name}.search_space: {spec['name']} has no input {port!r}")
            continue
        if isinstance(space, Choice):
            values = list(space.values)
        elif isinstance(space, LogUniform):
            values = [math.exp(space.min_value), math.exp(space.max_value)]
        elif isinstance(space, Uniform):
            values = [space.min_value, space.max_value]
        else:
            continue  # a distribution without bounds (normal, ...): the trial's own check stops bad draws
        if spec["inputs"][port]["type"] == "integer" and not isinstance(space, Choice):
            problems.append(f"jobs.{node_name}.search_space.{port}: an integer takes a choice or randint")
            continue
        for value in values:
            try:
                check_value(spec["name"], port, spec["inputs"][port], value)
            except UserInputError as error:
                problems.append(f"jobs.{node_name}.search_space: {error}")
    return problems


def restore_booleans(values: dict[str, Any], declared: dict[str, Any]) -> dict[str, Any]:
    """Pipeline input values with the booleans azure-ai-ml dumps as 0/1 (`job.dump`, `_to_dict`; the
    REST body it submits says True/False) turned back into booleans, so a compiled pipeline.yml and
    the checks of its values see what the author wrote."""
    return {
        name: bool(value)
        if getattr(declared.get(name), "type", None) == "boolean" and value in (0, 1)
        else value
        for name, value in values.items()
    }


def edge_problems(pipeline_job: PipelineJob) -> list[str]:
    """Every edge between two of our components must join the same port type and the same artifact
    (`mnist_mlops.artifacts`): the SDK checks neither, and AML would fail only inside the step."""
    data = pipeline_job._to_dict()
    ours = set(component_names())
    names = {
        node: stage
        for node, job in pipeline_job.jobs.items()
        if (stage := str(getattr(_component_of(job), "name", "")).removeprefix("mnist_mlops_")) in ours
    }
    problems = []
    for node_name, node in data["jobs"].items():
        for port, value in (node.get("inputs") or {}).items():
            edge = NODE_OUTPUT.fullmatch(str(value.get("path", ""))) if isinstance(value, dict) else None
            if edge is None or node_name not in names or edge["node"] not in names:
                continue  # an asset or parameter, or a component that is not one of ours
            source, target = load_spec(names[edge["node"]]), load_spec(names[node_name])
            given = (source["outputs"][edge["port"]]["type"], artifact_of(source["name"], edge["port"]))
            wanted = (target["inputs"][port]["type"], artifact_of(target["name"], port))
            if given != wanted:
                problems.append(
                    f"jobs.{node_name}.inputs.{port}: wired to {edge['node']}.outputs.{edge['port']}, a"
                    f" {given[0]} holding {given[1]}, but it takes a {wanted[0]} holding {wanted[1]}"
                )
    return problems
