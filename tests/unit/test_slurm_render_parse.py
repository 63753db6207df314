"""The Slurm batch script (a pure function of the run) and the parsing of Slurm's answers."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from orchestrator.executors.slurm.options import SlurmOptions, parse_array
from orchestrator.executors.slurm.parse import (
    Action,
    classify_state,
    is_permanent_error,
    is_transient_error,
    parse_exit_code,
    parse_sacct,
    parse_squeue,
)
from orchestrator.executors.slurm.render import (
    BatchRequest,
    format_time_limit,
    render_batch_script,
    sbatch_options,
)
from orchestrator.manifests.loader import validate_paths
from orchestrator.manifests.models import manifest_json_schema
from orchestrator.store.base import RunState


def _request(tmp_path: Path, argv: list[str], **options: object) -> BatchRequest:
    return BatchRequest(
        run_id="20261122T010203Z-abcdef",
        job="phot",
        attempt=1,
        argv=argv,
        env={},
        workdir=str(tmp_path),
        run_dir=tmp_path / "run",
        options=SlurmOptions.model_validate(options),
    )


def test_header_holds_every_option_and_the_unique_tag(tmp_path: Path) -> None:
    """The #SBATCH header carries the run's tag, its comment, output and every resource."""
    req = _request(
        tmp_path,
        ["true"],
        account="m4385",
        partition="gpu",
        qos="shared",
        constraint="gpu",
        time=30,
        nodes=1,
        ntasks=1,
        cpus_per_task=32,
        gpus_per_task=1,
        mem="16G",
        array="0-9%2",
        signal="B:USR1@120",
        requeue=False,
        extra_args=["--mail-type=END"],
    )
    opts = sbatch_options(req)
    assert opts[0] == "--job-name=orch-20261122T010203Z-abcdef"
    assert "--comment=orchestrator-run=20261122T010203Z-abcdef" in opts
    for expected in (
        "--account=m4385",
        "--partition=gpu",
        "--qos=shared",
        "--constraint=gpu",
        "--time=0-00:30:00",
        "--nodes=1",
        "--cpus-per-task=32",
        "--gpus-per-task=1",
        "--mem=16G",
        "--array=0-9%2",
        "--signal=B:USR1@120",
        "--no-requeue",
        "--mail-type=END",
    ):
        assert expected in opts
    assert any(o.startswith("--output=") and o.endswith("output-%a.log") for o in opts)
    script = render_batch_script(req, {})
    header = [line for line in script.splitlines() if line.startswith("#SBATCH ")]
    assert header == [f"#SBATCH {o}" for o in opts]


def test_script_runs_argv_verbatim_and_writes_markers(tmp_path: Path) -> None:
    """Run with bash as Slurm would: argv with quotes, spaces and $ reaches the program
    unchanged, the manifest's env is exported, and the started/exit markers are written."""
    req = _request(
        tmp_path,
        [
            "python3",
            "-c",
            "import sys,os; print(sys.argv[1:], os.environ['X']); sys.exit(3)",
            "a b",
            "$HOME",
            "it's",
        ],
    )
    (tmp_path / "run").mkdir()
    script = tmp_path / "run" / "job.sbatch"
    script.write_text(render_batch_script(req, {"X": "va'l ue"}))
    env = {**os.environ, "SLURM_JOB_ID": "77"}
    done = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 3
    assert done.stdout.strip() == "['a b', '$HOME', \"it's\"] va'l ue"
    assert (tmp_path / "run" / "started.none").read_text().strip() == "77"
    assert (tmp_path / "run" / "exit.none").read_text().strip() == "3"


def test_time_limits_round_up_to_minutes() -> None:
    """Slurm counts minutes: 90 s becomes 2 minutes, 2 days stay 2 days."""
    assert format_time_limit(90) == "0-00:02:00"
    assert format_time_limit(2 * 86400) == "2-00:00:00"


@pytest.mark.parametrize(
    ("written", "rendered"),
    [
        (90, "0-01:30:00"),  # a bare number is minutes, as in sbatch --time=90
        (1, "0-00:01:00"),
        (90.0, "0-01:30:00"),  # YAML's 90.0: still whole minutes
        ("90", "0-01:30:00"),
        (" 45 ", "0-00:45:00"),
        ("90:00", "0-01:30:00"),  # MM:SS, the minutes unbounded
        ("1:30", "0-00:02:00"),  # MM:SS: 90 s, rounded up to Slurm's whole minutes
        ("01:30:00", "0-01:30:00"),  # HH:MM:SS
        ("36:00:00", "1-12:00:00"),
        ("2-12", "2-12:00:00"),  # D-HH
        ("2-12:30", "2-12:30:00"),  # D-HH:MM
        ("2-12:30:15", "2-12:31:00"),  # D-HH:MM:SS, rounded up
        ("90m", "0-01:30:00"),
        ("2h", "0-02:00:00"),
        ("1h30m", "0-01:30:00"),
        ("90s", "0-00:02:00"),
        ("365d", "365-00:00:00"),  # the maximum
    ],
)
def test_time_limit_forms_render_as_slurm_reads_them(
    tmp_path: Path, written: object, rendered: str
) -> None:
    """executor.slurm.time accepts Slurm's own forms, bare minutes and durations with units,
    and the #SBATCH --time line says the same limit as D-HH:MM:SS."""
    opts = sbatch_options(_request(tmp_path, ["true"], time=written))
    assert f"--time={rendered}" in opts


@pytest.mark.parametrize(
    ("written", "says"),
    [
        (0, "under a minute"),  # sbatch's 0 would mean no limit at all
        ("0:30", "under a minute"),
        ("30s", "under a minute"),
        ("1:60", "must be 0-59"),
        ("1:60:00", "must be 0-59"),
        ("1-24", "hours after 'D-' must be 0-23"),
        ("1-2:3:4:5", "is not a time limit"),
        ("1:2:3:4", "is not a time limit"),
        ("soon", "is not a time limit"),
        ("-5", "is not a time limit"),
        (1.5, "not a whole number of minutes"),
        (True, "expected a time limit"),
        ("UNLIMITED", "leave executor.slurm.time out"),
        ("infinite", "leave executor.slurm.time out"),
        (525601, "maximum of 365 days"),
        ("366d", "maximum of 365 days"),
        ("9" * 5000, "maximum of 365 days"),
        (10**5000, "maximum of 365 days"),  # whose repr() itself would raise
        ("\u0669\u0660", "is not a time limit"),  # Arabic-Indic 90: digits, but not ASCII
    ],
    # Short ids: repr() of a 5000-digit int raises, and a 5000-character id helps no one.
    ids=lambda v: f"{type(v).__name__}:{v.bit_length() if isinstance(v, int) else str(v)[:20]}",
)
def test_time_limit_refusals_say_what_is_valid(written: object, says: str) -> None:
    """A time limit that is no Slurm time, under a minute, unlimited or over 365 days is
    refused with a message that names the accepted forms or the bound."""
    with pytest.raises(ValidationError) as info:
        SlurmOptions.model_validate({"time": written})
    message = info.value.errors()[0]["msg"]
    assert says in message
    if "not a time limit" in says or "must be" in says:
        assert "MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS" in message
        assert "'1h30m'" in message


def test_time_limit_error_names_file_line_and_field(tmp_path: Path) -> None:
    """`validate` reports a bad executor.slurm.time at its file, line and column."""
    path = tmp_path / "job.yaml"
    path.write_text(
        "apiVersion: orchestrator/v1\nkind: Command\nname: job\n"
        "executor:\n  slurm:\n    time: '1:75'\nspec: {command: ['true']}\n"
    )
    path.chmod(0o644)
    _, problems = validate_paths([path])
    assert [(p.line, p.col, p.field) for p in problems] == [(6, 11, "executor.slurm.time")]
    assert "must be 0-59" in problems[0].message


@pytest.mark.parametrize("written", [90, "1:30", "2-12:30:15", "1h30m", "90s", "365d"])
def test_time_limit_round_trips_through_a_dump(written: object) -> None:
    """A dumped SlurmOptions (as Python task kinds receive their manifest) reads back to the
    same limit: the dump uses units, never a bare number that would read as minutes."""
    opts = SlurmOptions.model_validate({"time": written})
    dumped = json.loads(opts.model_dump_json())
    assert isinstance(dumped["time"], str)
    assert SlurmOptions.model_validate(dumped).time == opts.time


def test_time_limit_json_schema_describes_the_accepted_forms() -> None:
    """Editors see the same forms: the generated JSON Schema accepts every form the loader
    accepts and refuses the malformed ones it can tell by shape."""
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed")
    schema = manifest_json_schema()["$defs"]["SlurmOptions"]["properties"]["time"]
    check = jsonschema.validators.validator_for(schema)(schema)
    for good in [90, 1, "90", "90:00", "1:30", "01:30:00", "2-12", "2-12:30", "2-12:30:15"]:
        assert check.is_valid(good), good
    for good in ["90m", "2h", "1h30m", "365d", 525600]:
        assert check.is_valid(good), good
    for bad in [0, 525601, 1.5, True, "1:60", "1-24", "1:2:3:4", "UNLIMITED", "soon"]:
        assert not check.is_valid(bad), bad


@pytest.mark.parametrize(
    ("spec", "ids", "throttle"),
    [("0-4%2", [0, 1, 2, 3, 4], 2), ("1,3,5-9:2", [1, 3, 5, 7, 9], None), ("7", [7], None)],
)
def test_array_specs(spec: str, ids: list[int], throttle: int | None) -> None:
    """Array specs expand to their task ids and throttle."""
    assert parse_array(spec) == (ids, throttle)


def test_state_table() -> None:
    """Slurm states map through one table; unknown states keep a run active."""
    assert classify_state("COMPLETED") == (Action.FINAL, RunState.SUCCEEDED)
    assert classify_state("FAILED") == (Action.FINAL, RunState.FAILED)
    assert classify_state("OUT_OF_MEMORY") == (Action.FINAL, RunState.FAILED)
    assert classify_state("CANCELLED by 0") == (Action.FINAL, RunState.CANCELLED)
    assert classify_state("TIMEOUT") == (Action.FINAL, RunState.TIMED_OUT)
    assert classify_state("NODE_FAIL")[0] == Action.RESUBMIT
    assert classify_state("PREEMPTED")[0] == Action.ACTIVE
    assert classify_state("REQUEUED")[0] == Action.ACTIVE
    assert classify_state("SOMETHING_NEW")[0] == Action.ACTIVE


def test_parsers() -> None:
    """squeue and sacct text output parse into rows; exit codes and signals are told apart."""
    rows = parse_squeue(
        "12|12|N/A|orch-x|RUNNING|None\n13_4|13|4|orch-y|PENDING|JobArrayTaskLimit\n"
    )
    assert (rows[0].base_id, rows[0].task, rows[0].state) == ("12", None, "RUNNING")
    assert (rows[1].base_id, rows[1].task) == ("13", "4")
    rows = parse_sacct(
        "27|27|orch-x|FAILED|3:0\n30|29_1|orch-y|COMPLETED|0:0\n31|29_[2-5%2]|orch-y|PENDING|0:0\n"
    )
    assert [(r.base_id, r.task, r.exit_code) for r in rows] == [("27", None, 3), ("29", "1", 0)]
    assert parse_exit_code("0:9") == -9


def test_error_classes() -> None:
    """Invalid account/partition/QOS are permanent; controller trouble is transient."""
    assert is_permanent_error(
        "sbatch: error: Batch job submission failed: "
        "Invalid account or account/partition combination specified"
    )
    assert is_permanent_error("sbatch: error: invalid partition specified: nope")
    assert is_permanent_error(
        "Batch job submission failed: Requested node configuration is not available"
    )
    assert is_transient_error(
        "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation"
    )
    assert is_transient_error("Unable to contact slurm controller (connect failure)")
    assert not is_permanent_error("Unable to contact slurm controller (connect failure)")


def test_slurm_commands_run_without_a_surrounding_allocations_variables() -> None:
    """A daemon started inside a Slurm job: its allocation's SLURM_* and the SBATCH_* option
    variables never reach the commands it runs (nor, through sbatch, the jobs); SLURM_CONF
    (which cluster) does."""
    from orchestrator.executors.slurm.commands import clean_environment

    env = {
        "PATH": "/usr/bin",
        "SLURM_CONF": "/etc/slurm/slurm.conf",
        "SLURM_JOB_ID": "77",
        "SLURM_CPUS_PER_TASK": "32",
        "SLURM_MEM_PER_CPU": "1000",
        "SBATCH_PARTITION": "debug",
        "SRUN_CPUS_PER_TASK": "32",
        "SALLOC_ACCOUNT": "m1",
        "MY_SLURM_NOTE": "kept",
    }
    assert clean_environment(env) == {
        "PATH": "/usr/bin",
        "SLURM_CONF": "/etc/slurm/slurm.conf",
        "MY_SLURM_NOTE": "kept",
    }


def test_gpus_per_task_without_ntasks_is_refused_at_validation() -> None:
    """sbatch refuses --gpus-per-task without -n/--ntasks (seen on the test cluster): the
    manifest says so when it is validated, with the fix."""
    with pytest.raises(ValidationError, match=r"gpus_per_task needs ntasks.*add 'ntasks: 1'"):
        SlurmOptions.model_validate({"gpus_per_task": 1})
    assert SlurmOptions.model_validate({"gpus_per_task": 1, "ntasks": 1}).ntasks == 1
    assert SlurmOptions.model_validate({"gpus_per_task": 0}).gpus_per_task == 0
