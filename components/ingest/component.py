"""The ingest component: typed ports over `executor.run_ingest`.

Not deterministic on purpose: the same source URI can hold new content tomorrow, so AML must never
reuse an earlier run's output for it (the local runner keys its cache on content instead).
"""

from mldesigner import Input, Output, command_component

VERSION = "0.1.0"


@command_component(
    name="mnist_mlops_ingest",
    version=VERSION,
    display_name="Ingest MNIST data",
    description=(
        "Fetch an image dataset (training/<class>/ and testing/<class>/ PNG folders of any size and class "
        "names, or MNIST's IDX files; local folder, .tar.gz, sha256-pinned http(s) tarball or Azure Blob) "
        "into a versioned, content-hashed dataset that records its image shape and classes, with a data "
        "validation report."
    ),
    is_deterministic=False,
    tags={"stage": "ingest", "project": "mnist-mlops", "framework": "none"},
    environment="../environments/data/environment.yaml",
    code="../..",
)
def ingest(
    dataset: Output(
        type="uri_folder", description="Decoded arrays per split and manifest.json (dataset_manifest)."
    ),
    data_report: Output(type="uri_file", description="data_report.json: validation checks and statistics."),
    source_data: Input(
        type="uri_folder",
        optional=True,
        description="Mounted dataset folder (or a folder holding one .tar.gz).",
    ) = None,
    source_uri: Input(
        type="string",
        optional=True,
        description="Local path, http(s) tarball URL, Azure Blob SAS URL or azureblob://.",
    ) = None,
    source_sha256: Input(
        type="string", optional=True, description="sha256 pin, required for http(s) tarballs."
    ) = None,
    reference_report: Input(
        type="uri_file",
        optional=True,
        description="A previous data_report.json: an early, warn-only shift check (evaluate gates on shift).",
    ) = None,
    classes: Input(
        type="string",
        optional=True,
        description="Class names in label order, comma-separated (default: training class folders, sorted).",
    ) = None,
    on_mixed_shape: Input(
        type="string",
        default="fail",
        enum=["fail", "resize"],
        description="Images of another size or channel count than most: fail, or resize and convert them.",
    ) = "fail",
    max_age_days: Input(
        type="integer",
        default=365,
        min=1,
        max=36500,
        description="Oldest acceptable newest-file age in days.",
    ) = 365,
    on_stale: Input(
        type="string", default="warn", enum=["fail", "warn"], description="Policy for stale data."
    ) = "warn",
    on_invalid: Input(
        type="string", default="fail", enum=["fail", "skip"], description="Policy for undecodable images."
    ) = "fail",
    max_invalid_fraction: Input(
        type="number",
        default=0.001,
        min=0.0,
        max=1.0,
        description="With on_invalid=skip: most images to skip.",
    ) = 0.001,
    max_prior_shift: Input(
        type="number",
        default=0.05,
        min=0.0,
        max=1.0,
        description="Class-prior total variation that flags shift.",
    ) = 0.05,
    max_stat_shift: Input(
        type="number",
        default=0.1,
        min=0.0,
        max=10.0,
        description="Relative change of pixel mean or ink that flags shift.",
    ) = 0.1,
    asset_name: Input(
        type="string",
        optional=True,
        description="In an Azure ML job: register the dataset as this data asset, versioned by content.",
    ) = None,
):
    from mnist_mlops.components.ingest.executor import run_ingest
    from mnist_mlops.errors import exit_on_user_error

    with exit_on_user_error():
        run_ingest(
            source_uri,
            dataset,
            data_report,
            source_data=source_data,
            source_sha256=source_sha256,
            reference_report=reference_report,
            classes=classes,
            on_mixed_shape=on_mixed_shape,
            max_age_days=max_age_days,
            on_stale=on_stale,
            on_invalid=on_invalid,
            max_invalid_fraction=max_invalid_fraction,
            max_prior_shift=max_prior_shift,
            max_stat_shift=max_stat_shift,
            asset_name=asset_name,
        )
