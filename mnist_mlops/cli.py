"""`mnist-mlops`: run components and pipelines, and keep the compiled specs in step with the code.

Each component gets a subcommand whose options are generated from its spec.yaml ports (`--max-age-days`
for port `max_age_days`), and runs the component's own container command in a child process.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mnist_mlops import __version__
from mnist_mlops.errors import USER_ERROR_EXIT_CODE, UserInputError, exit_on_user_error
from mnist_mlops.keys import DEFAULT_GRACE_SECONDS
from mnist_mlops.pipelines.job_options import add_job_options, add_sweep_option, job_from_options
from mnist_mlops.ports import component_dir, component_names, load_spec, parse_value


def _option(port: str) -> str:
    return "--" + port.replace("_", "-")


def _add_component_command(subparsers: argparse._SubParsersAction, name: str) -> None:
    spec = load_spec(name)
    parser = subparsers.add_parser(name, help=spec["display_name"], description=spec["description"])
    parser.set_defaults(handler=_run_component_command, component=name)
    for port, definition in spec["inputs"].items():
        required = "default" not in definition and not definition.get("optional")
        extra = f" [{definition['type']}" + (
            f", default {definition['default']}]" if "default" in definition else "]"
        )
        parser.add_argument(
            _option(port),
            dest=f"in_{port}",
            required=required,
            help=definition.get("description", "") + extra,
        )
    for port, definition in spec["outputs"].items():
        parser.add_argument(
            _option(port),
            dest=f"out_{port}",
            required=True,
            help=f"{definition.get('description', '')} [path]",
        )
    _add_verbose_option(parser)


def _add_verbose_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show the frameworks' own logs on the console (mldesigner, TensorFlow, libraries)",
    )


def _run_component_command(args: argparse.Namespace) -> int:
    from mnist_mlops.runner import run_component

    spec = load_spec(args.component)
    inputs = {}
    for port, definition in spec["inputs"].items():
        text = getattr(args, f"in_{port}")
        if text is not None:
            try:
                inputs[port] = parse_value(definition, text)
            except UserInputError as error:
                raise UserInputError(f"{_option(port)}: {error}") from None
    outputs = {port: getattr(args, f"out_{port}") for port in spec["outputs"]}
    code = run_component(args.component, inputs, outputs, verbose=args.verbose).returncode
    if code == 0:  # a component that says nothing on success still says where its outputs are
        print(f"{args.component} done: " + ", ".join(f"{port} {path}" for port, path in outputs.items()))
    return code


def _run_pipeline_command(args: argparse.Namespace) -> int:
    from mnist_mlops.pipelines.local import run_training_pipeline

    if not args.verbose:  # MLflow's notes (creating a new registry's tables) are not the user's business
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    return run_training_pipeline(
        args.data,
        sha256=args.sha256,
        runs_dir=Path(args.runs_dir),
        overrides=args.set,
        sweep=args.sweep,
        registry=args.registry,
        until=args.until,
        use_cache=not args.no_cache,
        isolation=args.isolation,
        tracking=args.tracking == "on",
        verbose=args.verbose,
    )


def _models_command(args: argparse.Namespace) -> int:
    from mnist_mlops.registry import list_versions, registry_uri, sqlite_file

    uri = registry_uri(args.registry)
    database = sqlite_file(uri)
    if database is not None and not database.is_file():
        raise UserInputError(f"no registry at {uri} (run the pipeline first, or pass --registry)")
    if args.card:
        return _card_command(uri, args.name, args.card)
    rows = list_versions(uri, args.name)
    if not rows:
        print(f"no versions of {args.name} in {uri}")
        return 0
    columns = list(rows[0])
    widths = {column: max(len(column), *(len(row[column]) for row in rows)) for column in columns}
    print("  ".join(column.ljust(widths[column]) for column in columns))
    for row in rows:
        print("  ".join(row[column].ljust(widths[column]) for column in columns))
    _history_command(args)
    return 0


def _card_command(uri: str, name: str, version: str) -> int:
    """Print a version's model card and the blessing it was registered on, from the registry."""
    import tempfile

    from mnist_mlops import contracts
    from mnist_mlops.registry import (
        JUDGEMENT_BLESSING,
        JUDGEMENT_CARD,
        JUDGEMENT_TAG,
        client,
        download_folder,
    )

    try:
        tags = client(uri).get_model_version(name, version).tags or {}
    except Exception as error:  # MlflowException: no such version
        raise UserInputError(
            f"{name} version {version}: not in {uri} ({str(error).splitlines()[0]})"
        ) from None
    if JUDGEMENT_TAG not in tags:
        raise UserInputError(f"{name} version {version}: registered before versions kept their model card")
    with tempfile.TemporaryDirectory(prefix="mnist-mlops-card-") as scratch:
        folder = download_folder(uri, tags[JUDGEMENT_TAG], Path(scratch) / "evaluation", JUDGEMENT_CARD)
        print((folder / JUDGEMENT_CARD).read_text())
        blessing = contracts.read_json(folder / JUDGEMENT_BLESSING, "blessing")
    verdict = "blessed" if blessing["blessed"] else "not blessed"
    print(f"blessing ({tags[JUDGEMENT_TAG]}/{JUDGEMENT_BLESSING}): {verdict}")
    for reason in blessing["reasons"]:
        print(f"  - {reason}")
    return 0


def _history_command(args: argparse.Namespace) -> None:
    from mnist_mlops.deployments import history_location, read_history
    from mnist_mlops.registry import registry_uri

    uri = registry_uri(args.registry)
    history = read_history(uri, args.name)
    if not history:
        return
    print(f"\ndeployment history ({history_location(uri, args.name)}):")
    for record in history:
        checks = record["infra_validation"]
        validated = (
            f"canary {checks['canary_correct']}/{checks['canary_requests']}, "
            f"rejected {checks['invalid_rejected']}/{checks['invalid_requests']} invalid"
            if checks
            else "-"
        )
        print(
            f"{record['deployed_at']}  {record['action']:<8}  v{record['model_version']:<4} "
            f"(was {record['previous_version'] or '-'})  {record['target']:<10} {record['outcome']:<11} "
            f"{validated}  {record['endpoint']}"
        )


def _lineage_command(args: argparse.Namespace) -> int:
    import json

    from mnist_mlops.serving.lineage import render, trace

    document = trace(
        args.ref,
        registry=args.registry,
        runs_dir=Path(args.runs_dir),
        requests=Path(args.requests) if args.requests else None,
    )
    print(json.dumps(document, indent=2) if args.json else render(document))
    return 0


def _report_command(args: argparse.Namespace) -> int:
    from mnist_mlops.pipelines.run_report import write_run_report

    print(write_run_report(Path(args.run_dir), registry=args.registry))
    return 0


def _serve_command(args: argparse.Namespace) -> int:
    from mnist_mlops.deployments import ensure_key, key_path, request_log_dir
    from mnist_mlops.registry import registry_uri
    from mnist_mlops.serving.fetch import fetch_in_child
    from mnist_mlops.serving.scorer import parse_model_uri
    from mnist_mlops.serving.server import main as run_server
    from mnist_mlops.serving.server import server_environment

    uri = registry_uri(args.registry)
    name, _, alias = parse_model_uri(args.model)
    version = fetch_in_child(args.model, uri)  # this process becomes the server's master: no MLflow in it
    key_file = Path(args.key_file) if args.key_file else ensure_key(key_path(uri, name))
    os.environ.update(
        server_environment(
            args.model,
            registry=uri,
            key_file=key_file,
            max_batch=args.max_batch,
            max_body_bytes=args.max_body_bytes,
            poll_seconds=args.poll_seconds,
            request_log=Path(args.request_log) if args.request_log else request_log_dir(uri, name),
            max_queue=args.max_queue,
        )
    )
    follows = f", following @{alias}" if alias else ""
    print(f"serving {name} v{version}{follows} at http://127.0.0.1:{args.port}/score", flush=True)
    print(f"bearer key: {key_file}", flush=True)
    print(f"request log: {args.request_log or request_log_dir(uri, name)}", flush=True)
    run_server(["--port", str(args.port), "--workers", str(args.workers)])
    return 0


def _keys_rotate_command(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from mnist_mlops.deployments import key_path
    from mnist_mlops.keys import rotate_key
    from mnist_mlops.registry import registry_uri

    path = Path(args.key_file) if args.key_file else key_path(registry_uri(args.registry), args.name)
    valid_until = rotate_key(path, grace_seconds=args.grace_seconds)
    until = datetime.fromtimestamp(valid_until, UTC).isoformat(timespec="seconds")
    print(
        f"rotated {path}: running servers accept the new key from their next request;"
        f" the previous key stays valid until {until} ({args.grace_seconds:g} s)"
    )
    return 0


def _rollback_command(args: argparse.Namespace) -> int:
    from mnist_mlops.deployments import rollback
    from mnist_mlops.registry import registry_uri

    record = rollback(registry_uri(args.registry), args.name, endpoint=args.endpoint)
    print(
        f"production: {record['model_name']} v{record['previous_version']} -> v{record['model_version']}"
        " (servers following @production switch within seconds)"
    )
    return 0


def _compile_command(args: argparse.Namespace) -> int:
    if args.pipeline == "batch" and args.sweep:
        raise UserInputError("--sweep: the batch pipeline trains nothing; sweep the training pipeline")
    if args.pipeline == "batch" and args.target == "aml":
        from mnist_mlops.pipelines.batch import compile_batch

        print("\n".join(map(str, compile_batch(Path(args.out)))))
    elif args.pipeline == "batch":
        from mnist_mlops.pipelines.batch import compile_kfp_batch

        print(compile_kfp_batch(Path(args.out), registry=args.image_registry, shards=args.shards))
    elif args.target == "aml":
        from mnist_mlops.pipelines.aml import aml_graph, compile_aml, training_job
        from mnist_mlops.pipelines.sweep import parse_sweep

        sweep = parse_sweep(aml_graph(), args.sweep)
        print(compile_aml(Path(args.out), training_job(sweep=sweep) if sweep else None))
    elif args.sweep:
        raise UserInputError(
            "--sweep: the Kubeflow pipeline has no sweep node (Katib is not wired in); compile for aml,"
            " or sweep locally with mnist-mlops run --sweep"
        )
    else:
        from mnist_mlops.pipelines.kfp import compile_kfp

        print(compile_kfp(Path(args.out), registry=args.image_registry))
    return 0


def _azure_client(args: argparse.Namespace, registry_name: str | None = None):
    from mnist_mlops.azure_jobs import ml_client

    return ml_client(
        Path(args.config) if args.config else None,
        args.subscription_id,
        args.resource_group,
        args.workspace,
        registry_name=registry_name,
    )


def _submit_command(args: argparse.Namespace) -> int:
    from mnist_mlops.azure_jobs import submit

    job = job_from_options(args)
    result = submit(_azure_client(args), job, experiment_name=args.experiment, stream=not args.no_stream)
    print(f"{result['name']}: {result['status']} {result['studio_url'] or ''}")
    return 0


def _publish_command(args: argparse.Namespace) -> int:
    from mnist_mlops.azure_jobs import publish

    for row in publish(_azure_client(args, args.registry_name), dry_run=args.dry_run):
        was = row["previous_version"] or "-"
        print(f"{row['name']:<24} {row['action']:<14} {row['version']:<8} (was {was})")
    return 0


def _add_workspace_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", help="an AML config.json (subscription_id, resource_group, workspace_name)"
    )
    parser.add_argument("--subscription-id")
    parser.add_argument("--resource-group")
    parser.add_argument("--workspace")


def _specs_command(args: argparse.Namespace) -> int:
    from mnist_mlops.authoring import sync

    changed = sync(check=args.check)
    for path in changed:
        print(f"{'drifted' if args.check else 'updated'}: {path}")
    return 1 if args.check and changed else 0


def _image_build_command(args: argparse.Namespace) -> int:
    from mnist_mlops.containers import build_image, build_job_image, environment_of

    build = build_job_image if args.job else build_image
    print(build(environment_of(args.component)))
    return 0


def _new_component_command(args: argparse.Namespace) -> int:
    from mnist_mlops.scaffold import new_component

    (commands,) = [
        action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction)
    ]
    folder = new_component(args.name, environment=args.environment, reserved=frozenset(commands.choices))
    print(f"{folder}: add its node to pipelines/graph.py to put it in the training pipeline")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnist-mlops", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mnist-mlops {__version__}")
    subparsers = parser.add_subparsers(required=True, metavar="COMMAND")
    registry_help = "MLflow registry URI (default $MLFLOW_TRACKING_URI, else ./mlflow.db)"

    run = subparsers.add_parser(
        "run",
        help="run the pipeline locally: ingest -> preprocess -> train -> evaluate -> register -> deploy",
    )
    run.add_argument(
        "--data",
        default="mnist",
        help="anything ingest accepts: folder, .tar.gz, pinned URL, blob (default: mnist, the original IDX"
        " files from a public mirror, sha256-pinned and cached)",
    )
    run.add_argument("--sha256", help="sha256 pin of an http(s) tarball")
    run.add_argument("--runs-dir", default="runs", help="where run folders are created (default ./runs)")
    run.add_argument(
        "--registry", help="MLflow registry URI (default $MLFLOW_TRACKING_URI, else ./mlflow.db)"
    )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="[NODE.]PARAM=VALUE",
        help="one node's input (train.epochs=3) or a pipeline parameter, set on every node it feeds"
        " (model_name=shop)",
    )
    run.add_argument(
        "--tracking",
        choices=("on", "off"),
        default="on",
        help="on (default): MLflow runs on the run's registry, a parent per run and a child per node;"
        " off: none (the run's own outputs and run.json are the same)",
    )
    run.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="NODE.PARAM=V1,V2,...",
        help="train once per combination of these values (repeatable: train.learning_rate=0.001,0.003"
        " --sweep train.batch_size=64,128), each trial cached like a node in NODE.trial-N/, and go on with"
        " the trial of the best validation accuracy (recorded in run.json)",
    )
    run.add_argument("--until", metavar="NODE", help="stop after this node")
    run.add_argument("--no-cache", action="store_true", help="run every node even if its result is cached")
    run.add_argument(
        "--isolation",
        choices=("process", "container"),
        default="process",
        help="process (default): each node in its own process; container: in its component image, no network",
    )
    _add_verbose_option(run)
    run.set_defaults(handler=_run_pipeline_command)

    for name in component_names():
        if (component_dir(name) / "spec.yaml").is_file():  # a brand-new component gets one from `specs`
            _add_component_command(subparsers, name)

    models = subparsers.add_parser("models", help="list registered model versions with aliases and metrics")
    models.add_argument("--name", default="mnist-mlops", help="registered model name (default mnist-mlops)")
    models.add_argument(
        "--card", metavar="VERSION", help="print this version's model card and blessing reasons instead"
    )
    models.add_argument(
        "--registry", help="MLflow registry URI (default $MLFLOW_TRACKING_URI, else ./mlflow.db)"
    )
    models.set_defaults(handler=_models_command)

    lineage = subparsers.add_parser(
        "lineage",
        help="what produced a model, a run's result or a request's answer: version, run and nodes, dataset,"
        " code, environment, blessing, deployments",
    )
    lineage.add_argument(
        "ref",
        metavar="REF",
        help="models:/<name>/<version>, models:/<name>@<alias>, a run folder (runs/<id>) or a request id",
    )
    lineage.add_argument("--registry", help=registry_help)
    lineage.add_argument(
        "--runs-dir", default="runs", help="where run folders are looked for (default ./runs)"
    )
    lineage.add_argument(
        "--requests", help="request log folder (default: every local endpoint's, beside the registry)"
    )
    lineage.add_argument("--json", action="store_true", help="print one JSON document (schema lineage)")
    lineage.set_defaults(handler=_lineage_command)

    report = subparsers.add_parser(
        "report",
        help="(re)write a run folder's report.html: graph, data, training, evaluation, blessing, lineage",
    )
    report.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (runs/<id>, holding run.json)")
    report.add_argument(
        "--registry", help="the registry the lineage asks (default: the one the run registered in)"
    )
    report.set_defaults(handler=_report_command)

    serve = subparsers.add_parser(
        "serve", help="serve a registered model on loopback (Azure ML inference server)"
    )
    serve.add_argument("--model", required=True, help="models:/<name>/<version> or models:/<name>@<alias>")
    serve.add_argument("--port", type=int, default=5001, help="port on 127.0.0.1 (default 5001)")
    serve.add_argument("--registry", help=registry_help)
    serve.add_argument("--key-file", help="bearer key file (default: the endpoint key made by deploy)")
    serve.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")
    serve.add_argument("--max-batch", type=int, help="most images per request (default 256)")
    serve.add_argument("--max-body-bytes", type=int, help="largest request body (default 4 MiB)")
    serve.add_argument(
        "--poll-seconds", type=float, help="how often the server checks where an alias points (default 2)"
    )
    serve.add_argument(
        "--request-log", help="folder for per-request monitoring records (default: beside the registry)"
    )
    serve.add_argument(
        "--max-queue",
        type=int,
        help="requests each worker lets wait while it scores one; more get 503 with Retry-After (default 32)",
    )
    serve.set_defaults(handler=_serve_command)

    keys = subparsers.add_parser("keys", help="manage an endpoint's bearer key")
    key_commands = keys.add_subparsers(required=True, metavar="ACTION")
    rotate = key_commands.add_parser(
        "rotate",
        help="replace the endpoint key; running servers take the new one at once, the old one stays valid"
        " for the grace period",
    )
    rotate.add_argument("--name", default="mnist-mlops", help="endpoint (model) name (default mnist-mlops)")
    rotate.add_argument("--registry", help=registry_help)
    rotate.add_argument("--key-file", help="the key file (default: the endpoint key beside the registry)")
    rotate.add_argument(
        "--grace-seconds",
        type=float,
        default=DEFAULT_GRACE_SECONDS,
        help="how long the previous key stays valid (default %(default)g)",
    )
    rotate.set_defaults(handler=_keys_rotate_command)

    back = subparsers.add_parser("rollback", help="move production back to the previously deployed version")
    back.add_argument("--name", default="mnist-mlops", help="registered model name (default mnist-mlops)")
    back.add_argument("--registry", help=registry_help)
    back.add_argument(
        "--endpoint", default="http://127.0.0.1:5001/score", help="scoring URI recorded in the history"
    )
    back.set_defaults(handler=_rollback_command)

    compile_ = subparsers.add_parser(
        "compile", help="write the pipeline for Azure ML or Kubeflow to a folder"
    )
    compile_.add_argument("--target", choices=("aml", "kfp"), required=True)
    compile_.add_argument(
        "--pipeline",
        choices=("training", "batch"),
        default="training",
        help="training (default), or batch: batch_score across processes (Azure ML parallel component, with"
        " its daily schedule; Kubeflow ParallelFor over --shards), merged into predictions and a summary",
    )
    compile_.add_argument(
        "--shards", type=int, default=4, help="batch on Kubeflow: parallel scoring tasks (default 4)"
    )
    compile_.add_argument("--out", required=True, help="output folder (replaced atomically)")
    compile_.add_argument(
        "--image-registry",
        default="localhost/",
        help="KFP: prefix of the job images the pipeline names, ending in '/' (default localhost/)",
    )
    add_sweep_option(compile_)
    compile_.set_defaults(handler=_compile_command)

    submit = subparsers.add_parser("submit", help="validate and submit the pipeline to an Azure ML workspace")
    _add_workspace_options(submit)
    add_job_options(submit)
    submit.add_argument("--experiment", default="mnist-mlops")
    submit.add_argument("--no-stream", action="store_true", help="return after submission")
    submit.set_defaults(handler=_submit_command)

    publish = subparsers.add_parser(
        "publish", help="register every component as a versioned asset (AML designer), bumped on change"
    )
    _add_workspace_options(publish)
    publish.add_argument("--registry-name", help="publish to this AML registry instead of the workspace")
    publish.add_argument("--dry-run", action="store_true", help="report what would be published")
    publish.set_defaults(handler=_publish_command)

    specs = subparsers.add_parser(
        "specs",
        help="regenerate each component's spec.yaml and README ports table, and README.md's import picture",
    )
    specs.add_argument("--check", action="store_true", help="only report drift; exit 1 if any")
    specs.set_defaults(handler=_specs_command)

    scaffold = subparsers.add_parser(
        "new-component", help="write a working component skeleton (ports, executor, spec, README, tests)"
    )
    scaffold.add_argument("name", help="lower_snake_case stage name")
    scaffold.add_argument("--environment", choices=("data", "model"), default="data")
    scaffold.set_defaults(handler=_new_component_command)

    image = subparsers.add_parser(
        "image", help="build a component's environment image with podman (no build args, as Azure ML)"
    )
    image.add_argument("component", choices=component_names())
    image.add_argument(
        "--job", action="store_true", help="the job image: the environment plus the code snapshot (Kubeflow)"
    )
    image.set_defaults(handler=_image_build_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with exit_on_user_error():
            return args.handler(args)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else USER_ERROR_EXIT_CODE


if __name__ == "__main__":
    sys.exit(main())
