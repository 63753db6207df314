"""Randomised manifests: the loader returns a manifest or a positioned ManifestError, nothing else.

Each test writes what hypothesis builds to a real file and calls ``load_manifest`` on it, so
the whole path (read, decode, YAML, validation, position lookup) is exercised.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from orchestrator.errors import ManifestError
from orchestrator.manifests.loader import LoadedManifest, load_manifest

FUZZ = settings(
    deadline=None,
    max_examples=100,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

# --------------------------------------------------------------------------- strategies

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=2**200),  # huge ints
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["", "on", "yes", "no", "off", "~", "null", "1e999", "-1", "0x1F", "1h30m"]),
)
junk = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=10), st.integers()), children, max_size=4),
    ),
    max_leaves=12,
)


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a valid value, sometimes anything at all."""
    return st.one_of(valid, valid, junk)


durations = st.one_of(
    st.sampled_from(["90s", "1h30m", "10m", "2d", "1.5h", "500ms", "0s", "6h", "1w"]),
    st.integers(min_value=0, max_value=10**6),
    st.floats(min_value=0, max_value=1e6),
    st.sampled_from(["-1s", "1x", "h", "1h 30", "", "  ", "1e3s"]),
)
names = st.one_of(
    st.sampled_from(["heartbeat", "disk-report", "a", "x1", "nightly-build"]),
    st.from_regex(r"\A[a-z0-9][-a-z0-9]{0,8}[a-z0-9]\Z"),
    st.text(max_size=70),
)
crons = st.one_of(
    st.sampled_from(["30 2 * * *", "*/5 * * * *", "0 3 * * mon-fri", "1 2 3 4", "61 * * * *"]),
    st.text(alphabet="0123456789*/-, ", max_size=20),
)
timezones = st.sampled_from(["UTC", "Europe/Zurich", "America/New_York", "Mars/Base", "", "../x"])
schedules = st.one_of(
    st.fixed_dictionaries(
        {"cron": maybe(crons)},
        optional={"timezone": maybe(timezones), "jitter": maybe(durations)},
    ),
    st.fixed_dictionaries({"every": maybe(durations)}, optional={"catchup": maybe(durations)}),
    st.fixed_dictionaries({"on": maybe(st.just("change"))}),
    junk,
)
env = st.dictionaries(
    st.one_of(st.from_regex(r"\A[A-Z_][A-Z0-9_]{0,8}\Z"), st.text(max_size=8)),
    maybe(st.one_of(st.text(max_size=10), st.integers(), st.booleans())),
    max_size=3,
)
mounts = st.lists(
    maybe(
        st.one_of(
            st.sampled_from(["/a:/b", "/a:/b:ro", "/a:/b:rw", "/a", "/a:/b:c:d", "/a:/b:xx"]),
            st.fixed_dictionaries(
                {"source": maybe(st.text(max_size=8)), "target": maybe(st.text(max_size=8))},
                optional={"readonly": maybe(st.booleans())},
            ),
        )
    ),
    max_size=3,
)
containers = st.fixed_dictionaries(
    {
        "runtime": maybe(
            st.sampled_from(["shifter", "podman-hpc", "podman", "apptainer", "none", "docker"])
        )
    },
    optional={
        "image": maybe(st.text(max_size=10)),
        "mounts": maybe(mounts),
        "env": maybe(env),
        "extra_args": maybe(st.lists(st.text(max_size=5), max_size=3)),
    },
)
specs = st.fixed_dictionaries(
    {"command": maybe(st.lists(maybe(st.text(max_size=10)), max_size=4))},
    optional={
        "env": maybe(env),
        "workdir": maybe(st.text(max_size=10)),
        "container": maybe(containers),
        "unknown_field": junk,
    },
)
policies = st.fixed_dictionaries(
    {},
    optional={
        "concurrency": maybe(st.sampled_from(["forbid", "allow", "replace", "queue"])),
        "timeout": maybe(durations),
        "kill_grace": maybe(durations),
        "retries": maybe(st.integers(min_value=-5, max_value=200)),
        "retry_backoff": maybe(
            st.one_of(durations, st.fixed_dictionaries({}, optional={"base": durations}))
        ),
        "history": maybe(st.integers(min_value=-5, max_value=10**20)),
        "on_remove": maybe(st.sampled_from(["keep", "cancel", "kill"])),
    },
)
manifests = st.fixed_dictionaries(
    {},
    optional={
        "apiVersion": maybe(st.sampled_from(["orchestrator/v1", "orchestrator/v2", "v1"])),
        "kind": maybe(st.sampled_from(["Command", "command", "Shell"])),
        "name": maybe(names),
        "description": maybe(st.text(max_size=30)),
        "schedule": maybe(schedules),
        "after": maybe(st.lists(names, max_size=3)),
        "policy": maybe(policies),
        "executor": maybe(st.sampled_from(["local", "slurm"])),
        "suspend": maybe(st.booleans()),
        "spec": maybe(specs),
        "spce": junk,
    },
)
top_levels = st.one_of(manifests, manifests, manifests, junk)

# --------------------------------------------------------------------------- the property

MINIMAL = b"apiVersion: orchestrator/v1\nkind: Command\nname: fuzz\nspec:\n  command: [true]\n"


def yaml_line_count(data: bytes) -> int:
    """Lines as YAML counts them: CR, LF, CRLF, NEL, LS and PS all end a line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data.count(b"\n") + 1
    text = text.replace("\r\n", "\n")
    return sum(text.count(brk) for brk in "\r\n\x85\u2028\u2029") + 1


def check_load(data: bytes) -> None:
    """Write ``data`` to a manifest file; loading it yields a manifest or a positioned error."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.yaml"
        path.write_bytes(data)
        path.chmod(0o644)
        try:
            result = load_manifest(path)
        except ManifestError as exc:
            lines = yaml_line_count(data)
            # any input: an error is one of two outcomes, each checked
            assert exc.problems, "a ManifestError must carry at least one problem"  # noqa: PT017
            for problem in exc.problems:
                assert problem.path == path
                assert 1 <= problem.line <= lines + 1, (problem, lines)
                assert problem.col >= 1, problem
                assert problem.message, problem
                assert str(problem).startswith(f"{path}:{problem.line}:{problem.col}: ")
        else:
            assert isinstance(result, LoadedManifest)


@FUZZ
@given(top_levels)
@example({"kind": "Command", "apiVersion": "orchestrator/v1", "name": "x", "spec": None})
@example({"apiVersion": "orchestrator/v1", "name": "x", "spec": {"command": ["a"]}})
@example({"kind": ["Command"], "name": "x"})
@example({"kind": {"a": 1}})
@example({"kind": "Command", "apiVersion": "orchestrator/v1", "name": "x", "schedule": []})
def test_random_manifest_dicts_load_or_fail_with_positions(doc: Any) -> None:
    """Any YAML-dumped structure of valid and invalid fields loads or fails with line:col."""
    check_load(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False).encode("utf-8"))


@FUZZ
@given(st.text(max_size=200))
@example("a: [1\n")
@example("--- a\n--- b\n")
@example("key: &a [*a]\n")
@example("? [a, b]\n: 1\n")
@example("{1: 2}\n")
@example("!!python/object:os.system {}\n")
@example("x: !!binary 'zz'\n")
@example("\ufeffapiVersion: orchestrator/v1\n")
@example("\t- a\n")
@example("a: [\r\r\r")
@example("a: b\u2028c: [\n")
@example("x: 1\r\ny: [\r\n")
@example("a: b\n" * 3 + "c")
def test_random_text_loads_or_fails_with_positions(text: str) -> None:
    """Arbitrary text, unicode included, loads or fails with line:col inside the file."""
    check_load(text.encode("utf-8", errors="surrogatepass"))


@FUZZ
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=len(MINIMAL)))
@example(b"\xff\xfe", 0)
@example(b"\x00", 10)
@example(b"\r\r\r\x85", 0)
def test_random_bytes_spliced_into_a_manifest_load_or_fail(junk_bytes: bytes, at: int) -> None:
    """Random bytes spliced into a valid manifest load or fail with line:col inside the file."""
    check_load(MINIMAL[:at] + junk_bytes + MINIMAL[at:])
