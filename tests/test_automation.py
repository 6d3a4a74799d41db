"""Automation around the pipeline, checked offline: the retraining schedules as the SDK's own entities
(built, validated, written as YAML and loaded back), and the CI/CD templates (GitHub Actions and Azure
Pipelines) parsed and held to the code: every `mnist-mlops` call parses with the real CLI, the test
command is the README's, the gate reads outputs the pipeline has, and no secret is written in them."""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from azure.ai.ml.entities import JobSchedule, PipelineJob
from azure.ai.ml.entities._load_functions import load_schedule
from marshmallow import ValidationError

from conftest import SHARED
from mnist_mlops.cli import build_parser
from mnist_mlops.errors import UserInputError
from mnist_mlops.pipelines import schedules
from mnist_mlops.pipelines.aml import training_job
from tests.test_readme import quick_start_commands

REPO = Path(__file__).resolve().parent.parent
CI = REPO / ".github" / "workflows" / "ci.yml"
TRAIN_AND_DEPLOY = REPO / ".github" / "workflows" / "train-and-deploy.yml"
AZURE_PIPELINE = REPO / ".azure-pipelines" / "train-and-deploy.yml"
TEMPLATES = (CI, TRAIN_AND_DEPLOY, AZURE_PIPELINE)
NODES = {"ingest", "preprocess", "resolve_champion", "train", "evaluate", "register", "deploy"}
IDENTITY = "11111111-2222-3333-4444-555555555555"


# --- schedules ---------------------------------------------------------------------------------------


def test_weekly_schedule_is_a_valid_recurrence_over_the_training_pipeline():
    job = training_job()
    schedule = schedules.retraining_schedule(job)
    assert isinstance(schedule, JobSchedule) and schedule.create_job is job
    assert schedule.name == "mnist-mlops-weekly-retrain"
    result = schedule._validate()
    assert result.passed, result.error_messages
    rest = schedule.trigger._to_rest_object()  # what the service receives
    assert (rest.trigger_type, rest.frequency.lower(), rest.interval) == ("Recurrence", "week", 1)
    assert rest.time_zone == "UTC"
    assert (rest.schedule.hours, rest.schedule.minutes, rest.schedule.week_days) == ([2], [0], ["monday"])


def test_compiled_schedules_load_back_with_the_pipeline_and_its_settings(tmp_path):
    job = training_job(identity_client_id=IDENTITY, train_compute="gpu-a100")
    paths = schedules.compile_schedules(tmp_path / "aml", job, freshness_hours=6)
    assert [path.stem for path in paths] == [schedules.WEEKLY_NAME, schedules.FRESHNESS_NAME]
    assert all(yaml.safe_load(path.read_text())["create_job"] == "./pipeline.yml" for path in paths)

    weekly, freshness = (load_schedule(path) for path in paths)
    for loaded in (weekly, freshness):
        assert isinstance(loaded, JobSchedule) and loaded._validate().passed
        pipeline = loaded.create_job
        assert isinstance(pipeline, PipelineJob) and set(pipeline.jobs) == NODES
        assert pipeline.settings.default_compute == "cpu-cluster" and pipeline.settings.force_rerun is False
        assert pipeline.jobs["train"].compute == "gpu-a100"
        assert pipeline.identity.client_id == IDENTITY
        assert pipeline.experiment_name == schedules.EXPERIMENT_NAME
        assert {"blessing", "deployment_record"} <= set(pipeline.outputs)

    trigger = weekly.trigger
    assert (trigger.type, trigger.frequency, trigger.interval) == ("Recurrence", "week", 1)
    assert trigger.time_zone == "UTC"
    pattern = trigger.schedule
    assert (pattern.hours, pattern.minutes, pattern.week_days) == (2, 0, ["monday"])
    assert (freshness.trigger.frequency, freshness.trigger.interval) == ("hour", 6)
    assert (freshness.trigger.schedule.hours, freshness.trigger.schedule.minutes) == ([], [])


def test_schedule_arguments_the_service_would_reject_fail_here():
    job = training_job()
    for wrong in (
        {"frequency": "fortnight"},
        {"interval": 0},
        {"frequency": "day", "week_days": ["monday"]},
        {"frequency": "hour"},  # a time of day on an hourly schedule
        {"week_days": ["funday"]},
        {"hours": 24},
        {"hours": 2, "minutes": None},
    ):
        with pytest.raises(UserInputError):
            schedules.retraining_schedule(job, **wrong)
    daily = schedules.retraining_schedule(job, frequency="day", week_days=None, hours=3, minutes=30)
    assert daily._validate().passed


def test_the_sdk_has_no_data_change_trigger():
    """The module docstring's claim, kept true: if a future SDK adds a trigger kind, this fails and the
    data-change story in pipelines/schedules.py should be revisited."""
    import azure.ai.ml.entities as entities
    from azure.ai.ml._restclient.arm_ml_service.models import TriggerType
    from azure.ai.ml.constants._common import ScheduleType

    assert {kind.value for kind in TriggerType} == {"Recurrence", "Cron"}
    kinds = sorted(name for name in dir(entities) if name.endswith("Trigger"))
    assert kinds == ["CronTrigger", "RecurrenceTrigger"]
    assert {kind.value for kind in ScheduleType} == {"job", "monitor", "data_import"}


def test_a_dumped_inline_schedule_does_not_load_back(tmp_path):
    """Why `compile_schedules` writes `create_job` as a file reference (see the module docstring)."""
    schedules.retraining_schedule(training_job()).dump(tmp_path / "inline.yml")
    with pytest.raises(ValidationError, match="create_job"):
        load_schedule(tmp_path / "inline.yml")


# --- CI/CD templates: helpers ---------------------------------------------------------------------------


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    """GitHub's `on:` (PyYAML reads the bare key `on` as True)."""
    value = workflow.get("on", workflow.get(True))
    return value if isinstance(value, dict) else {name: None for name in value}


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key), value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def _dicts(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _dicts(value)
    elif isinstance(node, list):
        for item in node:
            yield from _dicts(item)


def scripts(document: dict[str, Any]) -> list[str]:
    """Every shell script: GitHub `run`, Azure Pipelines `script`/`bash` and AzureCLI's `inlineScript`."""
    return [value for key, value in walk(document) if key in SCRIPT_KEYS and isinstance(value, str)]


SCRIPT_KEYS = {"run", "script", "bash", "inlineScript"}
OPERATORS = {"|", "||", "&&", ";", "&", "(", ")", ">", ">>", "<", "|&"}


def commands(script: str, program: tuple[str, ...]) -> list[list[str]]:
    """The arguments of each call of `program` (a command word, or words such as `python -m x`) in a
    shell script, with backslash continuations joined and quotes removed as the shell would."""
    calls = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
        for index in range(len(tokens)):
            start = index
            while start > 0 and re.fullmatch(r"\w+=\S*", tokens[start - 1]):
                start -= 1  # VAR=value prefixes
            at_command = start == 0 or tokens[start - 1] in OPERATORS
            words = tokens[index : index + len(program)]
            head = [Path(words[0]).name, *words[1:]] if words else []
            if at_command and tuple(head) == program:
                arguments = []
                for token in tokens[index + len(program) :]:
                    if token in OPERATORS:
                        break
                    arguments.append(token)
                calls.append(arguments)
    return calls


def parse_call(parser: argparse.ArgumentParser, arguments: list[str], where: str) -> argparse.Namespace:
    """Parse a call as the program would, with each shell expansion that feeds an option with choices
    standing in for a valid choice (its value is known only when the pipeline runs)."""
    actions = {flag: action for action in _all_actions(parser, arguments) for flag in action.option_strings}
    tokens = list(arguments)
    for index, token in enumerate(tokens):
        if token.startswith("--"):
            assert token.split("=", 1)[0] in actions, f"{where}: unknown option {token} in {arguments}"
            action = actions[token.split("=", 1)[0]]
            if action.choices and index + 1 < len(tokens) and "$" in tokens[index + 1]:
                tokens[index + 1] = next(iter(action.choices))
    try:
        return parser.parse_args(tokens)
    except SystemExit:
        pytest.fail(f"{where}: `{shlex.join(arguments)}` does not parse")


def _all_actions(parser: argparse.ArgumentParser, arguments: list[str]) -> list[argparse.Action]:
    subparsers = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    if not subparsers:
        return parser._actions
    assert arguments and arguments[0] in subparsers[0].choices, f"no subcommand {arguments[:1]}"
    return subparsers[0].choices[arguments[0]]._actions


def github_steps(workflow: dict[str, Any], job: str) -> list[dict[str, Any]]:
    return workflow["jobs"][job]["steps"]


def step_named(steps: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
    return next(step for step in steps if str(step.get("name", "")).startswith(prefix))


def uses(steps: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    return [step for step in steps if str(step.get("uses", "")).startswith(action + "@")]


# --- CI/CD templates: the checks ------------------------------------------------------------------------


def test_every_project_command_in_the_templates_parses_with_the_real_parser():
    """`mnist-mlops ...` against `mnist_mlops.cli.build_parser()`, and the schedule writer against its own."""
    subcommands, schedule_calls = {}, {}
    for path in TEMPLATES:
        texts = scripts(load(path))
        calls = [call for text in texts for call in commands(text, ("mnist-mlops",))]
        for call in calls:
            parse_call(build_parser(), call, path.name)
        subcommands[path] = [call[0] for call in calls]
        writer = [call for text in texts for call in commands(text, ("python", "-m", schedules.__name__))]
        for call in writer:
            parse_call(schedules.build_parser(), call, path.name)
        schedule_calls[path] = len(writer)
    assert subcommands == {
        CI: ["specs"],
        TRAIN_AND_DEPLOY: ["compile", "publish", "submit"],
        AZURE_PIPELINE: ["specs", "compile", "publish", "submit"],
    }
    assert schedule_calls == {CI: 0, TRAIN_AND_DEPLOY: 1, AZURE_PIPELINE: 1}


def test_the_ci_test_command_is_the_readme_one_that_ci_run_runs():
    command = quick_start_commands()[1]
    assert command in (REPO / ".ci" / "run").read_text().splitlines()
    assert [step for step in github_steps(load(CI), "test") if step.get("run") == command]
    test_stage = load(AZURE_PIPELINE)["stages"][0]
    assert [step for step in test_stage["jobs"][0]["steps"] if step.get("script") == command]


def test_github_ci_runs_tests_lint_and_spec_drift_on_push_and_pull_request():
    workflow = load(CI)
    assert {"push", "pull_request", "workflow_call"} <= set(triggers(workflow))
    steps = github_steps(workflow, "test")
    assert uses(steps, "actions/checkout")
    assert [step["with"]["python-version"] for step in uses(steps, "actions/setup-python")] == ["3.11"]
    assert [step["with"]["node-version"] for step in uses(steps, "actions/setup-node")] == ["20"]
    runs = [step.get("run", "") for step in steps]
    assert ".venv/bin/ruff check ." in runs and ".venv/bin/mnist-mlops specs --check" in runs
    # the skip is the documented switch, and the real-data tests get the pinned tarball
    assert workflow["env"]["MNIST_MLOPS_SKIP_CONTAINER_TESTS"] == "1"
    assert "MNIST_MLOPS_SKIP_CONTAINER_TESTS" in (REPO / "tests" / "test_containers.py").read_text()
    shared_readme = SHARED / "data" / "README.md"  # beside the checkout here and on the project's CI
    if shared_readme.is_file():
        pin = re.search(r"sha256: `([0-9a-f]{64})`", shared_readme.read_text())
        assert pin and workflow["env"]["MNIST_PNG_SHA256"] == pin.group(1)
    assert "MNIST_MLOPS_SHARED=" in step_named(steps, "Check the tarball")["run"]


def test_github_train_and_deploy_signs_in_with_oidc_and_gates_promotion():
    workflow = load(TRAIN_AND_DEPLOY)
    on = triggers(workflow)
    assert on["push"]["branches"] == ["main"] and "workflow_dispatch" in on
    assert on["repository_dispatch"]["types"] == [schedules.DATA_CHANGED_EVENT]
    jobs = workflow["jobs"]
    assert jobs["test"]["uses"] == "./.github/workflows/ci.yml"
    assert jobs["train"]["needs"] == "test" and jobs["promote"]["needs"] == "train"
    for name in ("train", "promote"):
        assert jobs[name]["permissions"]["id-token"] == "write"
        for login in uses(jobs[name]["steps"], "azure/login"):
            assert login["with"] == {
                "client-id": "${{ secrets.AZURE_CLIENT_ID }}",
                "tenant-id": "${{ secrets.AZURE_TENANT_ID }}",
                "subscription-id": "${{ secrets.AZURE_SUBSCRIPTION_ID }}",
            }
        assert uses(jobs[name]["steps"], "azure/login")
    assert jobs["promote"]["environment"]["name"] == "production"

    steps = jobs["train"]["steps"]
    order = [call[0] for step in steps for call in commands(step.get("run", ""), ("mnist-mlops",))]
    assert order == ["compile", "publish", "submit"]
    [call] = commands(step_named(steps, "Submit")["run"], ("mnist-mlops",))
    assert parse_call(
        build_parser(), call, "submit"
    ).no_stream  # waited for by the next step, with fresh sign-ins
    assert "ACTIONS_ID_TOKEN_REQUEST_URL" in step_named(steps, "Wait")["run"]
    check_gate(step_named(steps, "Promotion gate")["run"])
    promote = "\n".join(step.get("run", "") for step in jobs["promote"]["steps"])
    assert "jq -e '.blessed == true'" in promote and "jq -e '.outcome == \"deployed\"'" in promote
    assert f"build/schedules/{schedules.WEEKLY_NAME}.yml" in promote


def test_azure_pipeline_stages_service_connection_and_gated_promotion():
    pipeline = load(AZURE_PIPELINE)
    stages = pipeline["stages"]
    assert [stage["stage"] for stage in stages] == ["Test", "Publish", "Train", "Promote"]
    assert [stage.get("dependsOn") for stage in stages] == [None, "Test", "Publish", "Train"]
    variables = pipeline["variables"]
    assert {"group": "mnist-mlops-keyvault"} in variables
    assert {"name": "serviceConnection", "value": "mnist-mlops-aml"} in variables
    tasks = [node for node in _dicts(pipeline) if node.get("task") == "AzureCLI@2"]
    assert len(tasks) == 5  # publish; submit, wait, gate; schedule
    assert {task["inputs"]["azureSubscription"] for task in tasks} == {"${{ variables.serviceConnection }}"}

    train = stages[2]["jobs"][0]["steps"]
    gate = next(step for step in train if step.get("name") == "Gate")
    check_gate(gate["inputs"]["inlineScript"])
    assert "variable=verdict;isOutput=true]promote" in gate["inputs"]["inlineScript"]
    promote = stages[3]
    assert "dependencies.Train.outputs['Train.Gate.verdict'], 'promote'" in promote["condition"]
    deployment = promote["jobs"][0]
    assert deployment["deployment"] == "Promote" and deployment["environment"] == "mnist-mlops-production"
    assert f"build/schedules/{schedules.WEEKLY_NAME}.yml" in "\n".join(scripts(promote))


def check_gate(script: str) -> None:
    """The gate downloads outputs the pipeline has and tests fields its artifacts' schemas define."""
    downloaded = re.findall(r"--output-name (\w+)", script)
    assert sorted(downloaded) == ["blessing", "deployment_record"]
    assert set(downloaded) <= set(training_job().outputs)
    blessing = json.loads((REPO / "schemas" / "blessing.schema.json").read_text())
    record = json.loads((REPO / "schemas" / "deployment_record.schema.json").read_text())
    assert blessing["properties"]["blessed"] == {"type": "boolean"} and "reasons" in blessing["properties"]
    assert "deployed" in record["properties"]["outcome"]["enum"]
    assert "jq -e '.blessed == true'" in script and "jq -e '.outcome == \"deployed\"'" in script


GUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.IGNORECASE)
ASSIGNED = re.compile(
    r"(?i)\b(password|passwd|pwd|secret|client[_-]?secret|api[_-]?key|access[_-]?key|account[_-]?key|token"
    r"|sig)\b\s*[:=]\s*['\"]?(?![$'\"])[A-Za-z0-9+/=_.-]{12,}"
)
KEY_LIKE = re.compile(r"[A-Za-z0-9+/]{32,}={0,2}")
MARKERS = ("-----BEGIN", "AccountKey=", "SharedAccessSignature=", "&sig=", "?sig=", "ghp_", "github_pat_")


def test_no_secret_is_written_in_the_templates():
    for path in TEMPLATES:
        text = path.read_text()
        assert not GUID.findall(text), f"{path.name}: a GUID (subscription, tenant or client ID?)"
        assert not ASSIGNED.findall(text), f"{path.name}: a credential assigned a literal"
        keys = [word for word in KEY_LIKE.findall(text) if not re.fullmatch(r"[0-9a-f]+", word)]
        assert not keys, f"{path.name}: key-like literals {keys}"
        assert not [marker for marker in MARKERS if marker in text], path.name


def test_github_secrets_are_only_whole_references_and_never_reach_a_script():
    for path in (CI, TRAIN_AND_DEPLOY):
        text = path.read_text()
        references = re.findall(r"\$\{\{\s*secrets\.(\w+)\s*\}\}", text)
        assert len(references) == text.count("secrets."), f"{path.name}: secrets used inside an expression"
        assert set(references) <= {"AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_SUBSCRIPTION_ID"}
        for script in scripts(load(path)):  # values reach scripts through env, never spliced into them
            assert "${{" not in script, f"{path.name}: an expression inside a script: {script[:80]}"


def test_azure_pipeline_secret_variables_reach_scripts_through_env_only():
    pipeline = load(AZURE_PIPELINE)
    secret = re.compile(r"\$\((aml-[\w-]+|mnist-png-url|System\.AccessToken)\)")
    for script in scripts(pipeline):
        assert not secret.search(script), f"a secret variable inside a script: {script[:80]}"
    mapped = [value for key, value in walk(pipeline) if key == "env" for value in value.values()]
    assert {"$(System.AccessToken)", "$(aml-workspace)", "$(mnist-png-url)"} <= set(mapped)


@pytest.mark.skipif(
    importlib.util.find_spec("check_jsonschema") is None, reason="check-jsonschema is not installed"
)
def test_templates_validate_against_the_vendored_workflow_schemas():
    """check-jsonschema's bundled (offline) copies of the GitHub workflow and Azure Pipelines schemas;
    the Azure Pipelines one uses patterns only the non-unicode regex mode compiles."""
    runs = [
        ["--builtin-schema", "vendor.github-workflows", str(CI), str(TRAIN_AND_DEPLOY)],
        ["--regex-variant", "nonunicode", "--builtin-schema", "vendor.azure-pipelines", str(AZURE_PIPELINE)],
    ]
    for arguments in runs:
        command = [sys.executable, "-m", "check_jsonschema", *arguments]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
