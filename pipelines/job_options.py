"""The command-line options that shape the Azure ML training job, declared once for every command that
makes one (`mnist-mlops submit`, `python -m mnist_mlops.pipelines.schedules`), so a scheduled pipeline
is the one CD submits. Light on purpose: the CLI builds its parser from it at every start, and
azure-ai-ml is imported only when a job is made."""

from __future__ import annotations

import argparse
from typing import Any

from mnist_mlops.data_assets import DATASET_ASSET
from mnist_mlops.pipelines.sweep import DEFAULT, DEFAULT_SPACE, OBJECTIVES, Limits, describe

RAW_DATA = "azureml://datastores/workspaceblobstore/paths/mnist/"
NO_ASSET = "none"


def add_job_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=RAW_DATA, help=f"the raw data ingest reads (default {RAW_DATA})")
    parser.add_argument("--compute", default="cpu-cluster", help="default compute of every node")
    parser.add_argument("--train-compute", help="compute of the train node (default: --compute)")
    parser.add_argument("--identity-client-id", help="user-assigned managed identity the job runs as")
    parser.add_argument("--deploy-target", choices=("azureml", "kubernetes"), default="azureml")
    parser.add_argument(
        "--dataset-asset",
        default=DATASET_ASSET,
        help=f"data asset ingest registers its dataset as, versioned by content (default {DATASET_ASSET});"
        f" '{NO_ASSET}' registers none. The job's identity needs write access to the workspace's data assets",
    )
    parser.add_argument(
        "--accept-data-shift",
        action="store_true",
        help="promote even when the training data shifted from production's (evaluate.accept_data_shift):"
        " an explicit decision, recorded in the blessing and the registry's tags",
    )
    add_sweep_option(parser)


def add_sweep_option(parser: argparse.ArgumentParser) -> None:
    """`--sweep` for an Azure ML job (`submit`, schedules, `compile --target aml`)."""
    parser.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="default|NODE.PARAM=V1,V2,...",
        help=f"make train a sweep node (objective {OBJECTIVES['train'].metric}, Bandit early termination, at"
        f" most {Limits().max_total_trials} trials, {Limits().max_concurrent_trials} at once): '{DEFAULT}'"
        f" samples {describe(DEFAULT_SPACE)}; train.PARAM=V1,V2 chooses among the values given (repeatable;"
        " replaces the default's for that parameter; explicit values only: every combination is tried)",
    )


def job_from_options(args: argparse.Namespace) -> Any:
    """The training pipeline job the options describe (`pipelines.aml.training_job`)."""
    from mnist_mlops.pipelines.aml import aml_graph, training_job
    from mnist_mlops.pipelines.sweep import parse_sweep

    return training_job(
        args.data,
        compute=args.compute,
        train_compute=args.train_compute,
        identity_client_id=args.identity_client_id,
        deploy_target=args.deploy_target,
        dataset_asset=None if args.dataset_asset == NO_ASSET else args.dataset_asset,
        accept_data_shift=args.accept_data_shift,
        sweep=parse_sweep(aml_graph(), args.sweep),
    )
