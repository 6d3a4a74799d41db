"""Retraining schedules for the AML training pipeline, as the SDK's own `JobSchedule` entities.

- `retraining_schedule`: the pipeline on a calendar, weekly on Monday at 02:00 UTC by default, so the
  production model is never older than a week of data even when nobody pushes code.
- `freshness_schedule`: the pipeline every N hours, bounding how long new data waits to be trained on.

Each run reads the *current* contents of the `raw_data` folder: the input is a datastore path, not a
versioned data asset, so files dropped there are picked up by the next run, content-hashed by ingest
into a new dataset version and judged against production like any other challenger.

Data-change triggers: azure-ai-ml 1.35.2 has none, for pipeline jobs or otherwise. Its triggers are
`CronTrigger` and `RecurrenceTrigger` only (`azure/ai/ml/entities/_schedule/trigger.py`), and the
service enum knows no other (`TriggerType` in `_restclient/arm_ml_service/models/_enums.py`:
Recurrence, Cron). The other schedule kinds (`ScheduleType`: job, monitor, data_import) run on the
same two time triggers: `MonitorSchedule` computes drift signals (`DataDriftSignal`) for deployed
models and only notifies by e-mail (`AlertNotification(emails=...)`), and `ImportDataSchedule` copies
from external sources on a timer. Pinning the input to a data asset label does not help either:
`name@latest` is resolved to a version by the client when the schedule is created
(`OperationOrchestrator._resolve_name_version_from_name_label`), so the schedule keeps that version.

`freshness_schedule` is the closest thing the SDK offers, and it is not cheap on unchanged data. AML
reuses a node only if it is deterministic and its code, environment, inputs and parameters are all
unchanged. Ingest is non-deterministic (it reads the outside world), so it always runs, and its
output is a new job output each time; preprocess and train therefore see a new input and run too.
Every tick is a full training run, and since the gate tolerates a tie (`max_regression`), a retrain
on the same data is usually blessed and redeployed as a new version. Use it only where that cost is
acceptable. For a real data-change trigger, route the storage account's `BlobCreated` events (Event
Grid, filtered on the data folder) through a small Function or Logic App to the CI/CD pipeline:
`.github/workflows/train-and-deploy.yml` runs on the `repository_dispatch` event `DATA_CHANGED_EVENT`.

`compile_schedules` writes the schedules as YAML next to the compiled pipeline, for
`az ml schedule create --file`. Why not `JobSchedule.dump`: it writes the pipeline inline, which
`load_schedule` refuses (its schema wants `create_job: <file>` or `create_job.job: <file>`), so a
dumped schedule does not load back; one that refers to the compiled `pipeline.yml` does.
"""

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import yaml
from azure.ai.ml.constants import TimeZone
from azure.ai.ml.entities import JobSchedule, PipelineJob, RecurrencePattern, RecurrenceTrigger

from mnist_mlops.errors import UserInputError, exit_on_user_error
from mnist_mlops.pipelines.job_options import add_job_options, job_from_options

WEEKLY_NAME = "mnist-mlops-weekly-retrain"
FRESHNESS_NAME = "mnist-mlops-data-freshness"
DATA_CHANGED_EVENT = "mnist-data-changed"  # the repository_dispatch type train-and-deploy.yml runs on
EXPERIMENT_NAME = "mnist-mlops"  # the experiment `mnist-mlops submit` uses, so scheduled runs sit beside
SCHEDULE_SCHEMA = "https://azuremlschemas.azureedge.net/latest/schedule.schema.json"
FREQUENCIES = ("minute", "hour", "day", "week", "month")
WEEK_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_TAGS = {"project": "mnist-mlops", "trigger": "time"}


def retraining_schedule(
    job: PipelineJob,
    *,
    name: str = WEEKLY_NAME,
    frequency: str = "week",
    interval: int = 1,
    week_days: Sequence[str] | None = ("monday",),
    hours: int | None = 2,
    minutes: int | None = 0,
    start_time: str | datetime | None = None,
    time_zone: str | TimeZone = TimeZone.UTC,
    description: str | None = None,
    display_name: str = "MNIST retraining",
) -> JobSchedule:
    """A `JobSchedule` running `job` (e.g. `training_job()`) every `interval` `frequency` units.

    `hours`/`minutes` (and `week_days`, for weekly schedules) pin the time of day, which the service
    accepts only for day, week and month frequencies; pass `None` for minute and hour schedules.
    Refuses combinations the service would reject, so a bad schedule fails here, not at creation.
    """
    if frequency not in FREQUENCIES:
        raise UserInputError(f"schedule frequency {frequency!r}: expected one of {', '.join(FREQUENCIES)}")
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
        raise UserInputError(f"schedule interval {interval!r}: expected a whole number >= 1")
    pinned = hours is not None or minutes is not None
    if frequency in ("minute", "hour") and (pinned or week_days):
        raise UserInputError(f"a time of day or week days cannot be set on a {frequency}ly schedule")
    if week_days and frequency != "week":
        raise UserInputError(f"week_days are for weekly schedules, not {frequency!r} ones")
    bad_days = sorted(set(week_days or ()) - set(WEEK_DAYS))
    if bad_days:
        raise UserInputError(f"week_days {bad_days}: expected names from {', '.join(WEEK_DAYS)}")
    if pinned and not (
        isinstance(hours, int) and 0 <= hours <= 23 and isinstance(minutes, int) and 0 <= minutes <= 59
    ):
        raise UserInputError(f"time of day {hours!r}:{minutes!r}: expected hours 0-23 and minutes 0-59")
    pattern = (
        RecurrencePattern(hours=hours, minutes=minutes, week_days=list(week_days) if week_days else None)
        if pinned
        else None
    )
    trigger = RecurrenceTrigger(
        frequency=frequency, interval=interval, schedule=pattern, start_time=start_time, time_zone=time_zone
    )
    return JobSchedule(
        name=name,
        trigger=trigger,
        create_job=job,
        display_name=display_name,
        description=description or f"Retrain, judge and deploy if blessed, every {interval} {frequency}(s).",
        tags=dict(_TAGS),
    )


def freshness_schedule(
    job: PipelineJob, *, max_staleness_hours: int = 24, name: str = FRESHNESS_NAME
) -> JobSchedule:
    """The pipeline every `max_staleness_hours` hours: new data reaches a model within that bound.

    Not a data-change trigger (the SDK has none; see the module docstring): every tick is a full
    training run, data changed or not.
    """
    return retraining_schedule(
        job,
        name=name,
        frequency="hour",
        interval=max_staleness_hours,
        week_days=None,
        hours=None,
        minutes=None,
        description=(
            f"Full pipeline every {max_staleness_hours} h so new data is trained on within that bound; "
            "it retrains on unchanged data too (AML has no data-change trigger)."
        ),
    )


def write_schedule(schedule: JobSchedule, path: Path, pipeline_file: Path) -> Path:
    """Write `schedule` as YAML whose `create_job` refers to `pipeline_file` (the compiled pipeline of
    the schedule's job), then load it back with the SDK and refuse a file that does not validate."""
    from azure.ai.ml.entities._load_functions import load_schedule

    document = {"$schema": SCHEDULE_SCHEMA, **schedule._to_dict()}
    document["create_job"] = "./" + Path(os.path.relpath(pipeline_file, Path(path).parent)).as_posix()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(document, sort_keys=False))
    result = load_schedule(path)._validate()
    if not result.passed:
        raise UserInputError(f"{path}: the schedule does not load back: {result.error_messages}")
    return Path(path)


def compile_schedules(
    out_dir: Path, job: PipelineJob | None = None, *, freshness_hours: int | None = None
) -> list[Path]:
    """Compile the pipeline into `out_dir` (`compile_aml`) and write beside it the weekly schedule and,
    with `freshness_hours`, the freshness schedule; returns the schedule files, one per schedule name."""
    from mnist_mlops.pipelines.aml import compile_aml, training_job

    job = job or training_job()
    job.experiment_name = job.experiment_name or EXPERIMENT_NAME
    schedules = [retraining_schedule(job)]
    if freshness_hours is not None:
        schedules.append(freshness_schedule(job, max_staleness_hours=freshness_hours))
    pipeline_file = compile_aml(Path(out_dir), job)
    return [write_schedule(item, Path(out_dir) / f"{item.name}.yml", pipeline_file) for item in schedules]


def build_parser() -> argparse.ArgumentParser:
    """The options of `python -m mnist_mlops.pipelines.schedules`: those of `mnist-mlops submit` that
    shape the job, so the scheduled pipeline is the one CD submitted."""
    parser = argparse.ArgumentParser(
        prog="python -m mnist_mlops.pipelines.schedules", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", required=True, help="output folder (the compiled pipeline is replaced)")
    add_job_options(parser)
    parser.add_argument("--freshness-hours", type=int, help="also write the every-N-hours schedule")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Write the schedule files CD applies with `az ml schedule create --file`; prints their paths."""
    args = build_parser().parse_args(argv)
    with exit_on_user_error():
        job = job_from_options(args)
        for path in compile_schedules(Path(args.out), job, freshness_hours=args.freshness_hours):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
