"""Unit tests of the AliEnToken pieces: certificate reading, host patterns, the spec, the
init command line, the env file."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from orchestrator.tasks.alien_token.certificate import expand_path, format_left, read_token
from orchestrator.tasks.alien_token.hostnames import expand_host_pattern
from orchestrator.tasks.alien_token.local_copy import atomic_write, env_file_text
from orchestrator.tasks.alien_token.remote import remote_script
from orchestrator.tasks.alien_token.renew import init_argv
from orchestrator.tasks.alien_token.spec import AliEnTokenManifest, AliEnTokenSpec
from orchestrator.tasks.alien_token.state import HostState
from tests.alien_token.conftest import manifest_dict
from tests.alien_token.tokens import make_token


def test_not_after_comes_from_the_certificate(tmp_path: Path) -> None:
    """read_token reports the certificate's notAfter and no problem for a matching pair."""
    not_after = make_token(tmp_path / "c.pem", tmp_path / "k.pem", 3 * 3600)
    token = read_token(tmp_path / "c.pem", tmp_path / "k.pem")
    assert token.problem is None
    assert token.not_after == not_after
    left = token.seconds_left(datetime.now(UTC))
    assert left is not None
    assert 3 * 3600 - 60 < left <= 3 * 3600
    assert token.accepted_by_clients(datetime.now(UTC))


def test_expired_and_nearly_expired_tokens_are_not_accepted(tmp_path: Path) -> None:
    """A token that expired, or has less than 600 s left, is one clients refuse."""
    make_token(tmp_path / "c.pem", tmp_path / "k.pem", -60)
    expired = read_token(tmp_path / "c.pem", tmp_path / "k.pem")
    assert expired.problem is None
    assert not expired.accepted_by_clients(datetime.now(UTC))
    make_token(tmp_path / "c.pem", tmp_path / "k.pem", 300)
    short = read_token(tmp_path / "c.pem", tmp_path / "k.pem")
    assert not short.accepted_by_clients(datetime.now(UTC))


def test_missing_garbled_and_mismatched_tokens_have_a_problem(tmp_path: Path) -> None:
    """Missing files, a non-PEM certificate and a key of another token are each named."""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    assert "no token certificate" in (read_token(cert, key).problem or "")
    make_token(cert, key, 3600)
    make_token(tmp_path / "other-c.pem", tmp_path / "other-k.pem", 3600)
    assert "does not belong" in (read_token(cert, tmp_path / "other-k.pem").problem or "")
    assert "no token key" in (read_token(cert, tmp_path / "nokey.pem").problem or "")
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    assert "not a PEM certificate" in (read_token(tmp_path / "junk.pem", key).problem or "")


def test_expand_path_substitutes_uid_home_and_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """$UID is the numeric uid (bash does not export it); ~ and $VAR expand as in a shell."""
    monkeypatch.setenv("HOME", "/home/someone")
    monkeypatch.setenv("SCRATCH", "/pscratch/x")
    uid = os.getuid()
    assert expand_path("/tmp/tokencert_$UID.pem") == Path(f"/tmp/tokencert_{uid}.pem")
    assert expand_path("/tmp/k_${UID}.pem") == Path(f"/tmp/k_{uid}.pem")
    assert expand_path("~/tokens") == Path("/home/someone/tokens")
    assert expand_path("$SCRATCH/t") == Path("/pscratch/x/t")


def test_format_left_reads_like_a_duration() -> None:
    """Time left is shown in days/hours/minutes, or minutes/seconds when short."""
    assert format_left(2 * 86400 + 3 * 3600 + 60) == "2d 3h 1m"
    assert format_left(125) == "2m 5s"
    assert format_left(-3600) == "expired 1h ago"
    assert format_left(None) == "no token"


def test_host_patterns_expand_like_bash() -> None:
    """Ranges keep their zero padding, lists alternate, several braces multiply out."""
    assert expand_host_pattern("login{01..03}") == ["login01", "login02", "login03"]
    assert len(expand_host_pattern("login{01..40}")) == 40
    assert expand_host_pattern("nid{8..10}") == ["nid8", "nid9", "nid10"]
    assert expand_host_pattern("n{1,2}-{a,b}") == ["n1-a", "n1-b", "n2-a", "n2-b"]
    assert expand_host_pattern("plain") == ["plain"]
    for bad in ("login{01..40", "login{x}", "login}{", "{-a,b}"):
        with pytest.raises(ValueError, match=r"brace|neither a range|empty name"):
            expand_host_pattern(bad)


def test_spec_defaults_are_alien_token_init_paths() -> None:
    """The default paths are alien-token-init's, with the default init command."""
    spec = AliEnTokenSpec()
    assert spec.cert_path == "/tmp/tokencert_$UID.pem"
    assert spec.key_path == "/tmp/tokenkey_$UID.pem"
    assert spec.init_command == ["alien-token-init"]
    assert spec.targets.all_hosts() == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"renew_before": "5m"}, "more than 10m"),
        ({"renew_before": "1h", "alert_before": "2h"}, "alert_before must not exceed"),
        ({"init_command": "alien-token-init"}, "argv list"),
        ({"targets": {"hosts": ["a"], "min_hosts": 2}}, "min_hosts is 2"),
        ({"targets": {"host_pattern": "login{01..}"}}, "neither a range"),
        ({"targets": {"ssh_options": ["-o", "BatchMode=no"]}}, "BatchMode"),
        ({"targets": {"parallelism": 0}}, "greater than or equal to 1"),
        ({"force": "yes"}, "valid boolean"),
        ({"target": {}}, "Extra inputs"),
        ({"targets": {"hosts": ["-oProxyCommand=x"]}}, "should match pattern"),
    ],
)
def test_spec_refuses_unworkable_settings(spec: dict[str, object], message: str) -> None:
    """Invalid settings are refused with a message that says what would be valid."""
    with pytest.raises(ValidationError) as info:
        AliEnTokenManifest.model_validate(manifest_dict("t", spec))
    assert message in str(info.value)


def test_alert_window_defaults_to_half_of_renew_before() -> None:
    """Without alert_before the alert starts at half of renew_before, so a shorter
    renew_before alone is a valid spec."""
    assert AliEnTokenSpec.model_validate({"renew_before": "6h"}).alert_window_s == 3 * 3600
    assert AliEnTokenSpec.model_validate({"alert_before": "2h"}).alert_window_s == 2 * 3600


def test_hosts_and_pattern_combine_once_each() -> None:
    """hosts and host_pattern are joined in order, each name once."""
    spec = AliEnTokenSpec.model_validate(
        {"targets": {"hosts": ["login02", "dtn01"], "host_pattern": "login{01..03}"}}
    )
    assert spec.targets.all_hosts() == ["login02", "dtn01", "login01", "login03"]


def test_init_argv_puts_the_container_around_the_wrapper() -> None:
    """shifter runs alienv, which runs alien-token-init, as on Perlmutter."""
    spec = AliEnTokenSpec.model_validate(
        {
            "init_command": ["alien-token-init", "jdoe"],
            "wrapper": ["/cvmfs/alice.cern.ch/bin/alienv", "setenv", "JAliEn-ROOT/1.9.4-1", "-c"],
            "container": {
                "runtime": "shifter",
                "image": "tch285/o2alma:latest",
                "extra_args": ["--module=cvmfs"],
            },
            "env": {"X509_USER_KEY": "/global/homes/j/jdoe/.globus/userkey.pem"},
        }
    )
    argv, env = init_argv(spec, {"PATH": "/usr/bin"})
    assert argv == [
        "shifter",
        "--image=tch285/o2alma:latest",
        "--module=cvmfs",
        "--",
        "/cvmfs/alice.cern.ch/bin/alienv",
        "setenv",
        "JAliEn-ROOT/1.9.4-1",
        "-c",
        "alien-token-init",
        "jdoe",
    ]
    assert env["X509_USER_KEY"].endswith("userkey.pem")
    assert env["PATH"] == "/usr/bin"


def test_atomic_write_is_private_and_skips_identical_content(tmp_path: Path) -> None:
    """Files are written with mode 0600 and not rewritten when unchanged."""
    target = tmp_path / "f"
    assert atomic_write(target, b"one")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert not atomic_write(target, b"one")
    assert atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_env_file_exports_the_three_variables(tmp_path: Path) -> None:
    """The env file exports JALIEN_TOKEN_CERT/KEY and ALIENPY_DEBUG_FILE, quoted for sh."""
    text = env_file_text(
        Path("/h/my tokens/c.pem"), Path("/h/my tokens/k.pem"), "/h/d.log", "tok", "2030Z"
    )
    assert "export JALIEN_TOKEN_CERT='/h/my tokens/c.pem'\n" in text
    assert "export JALIEN_TOKEN_KEY='/h/my tokens/k.pem'\n" in text
    assert "export ALIENPY_DEBUG_FILE=/h/d.log\n" in text


def test_remote_script_is_one_line_and_quotes_paths() -> None:
    """The remote program is one line (csh login shells) and quotes the directory."""
    from orchestrator.tasks.alien_token.local_copy import TokenFiles

    files = TokenFiles(b"c", b"k", "tokencert_1.pem", "tokenkey_1.pem")
    script = remote_script("/tmp/a dir", files)
    assert "\n" not in script
    assert "d='/tmp/a dir'" in script
    assert 'd="$HOME"/tokens' in remote_script("~/tokens", files)


def test_host_state_due_rules() -> None:
    """A host is due after a failure, for a new token, and when its copy is old."""
    now = datetime(2030, 1, 1, 12, tzinfo=UTC)
    fresh = HostState(ok=True, fingerprint="f1", copied_at="2030-01-01T11:00:00+00:00")
    assert not fresh.due("f1", now, 7200)
    assert fresh.due("f2", now, 7200)
    assert fresh.due("f1", now, 1800)
    assert HostState(ok=False, error="refused").due("f1", now, 7200)
