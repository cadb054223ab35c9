"""No credential from a URL reaches a message: the `redact_url` helper, then each backend end to end.

The CLI checks run `python -m visionlake` as a subprocess and look at everything it printed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from visionlake.errors import ConfigError
from visionlake.ingest import CameraSource
from visionlake.lake import Lake
from visionlake.redact import MASK, is_sensitive_param, redact_url

# --- the helper --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # userinfo: the user stays (it helps), the password goes
        ("rtsp://admin:hunter2@cam.local:554/live", "rtsp://admin:***@cam.local:554/live"),
        ("kafka://user:s3cret@h1:9092,h2:9092", "kafka://user:***@h1:9092,h2:9092"),
        ("postgresql://u:pw@db/x?sslmode=require", "postgresql://u:***@db/x?sslmode=require"),
        ("http://admin@cam/", "http://admin@cam/"),  # no password
        ("http://admin:@cam/", "http://admin:@cam/"),  # empty password
        # query parameters: sensitive values only, the rest character for character
        ("rtsp://admin:pw@cam/stream?token=abc", "rtsp://admin:***@cam/stream?token=***"),
        (
            "http://cam/snap.cgi?user=admin&pwd=1234&channel=1&subtype=0",
            "http://cam/snap.cgi?user=admin&pwd=***&channel=1&subtype=0",
        ),
        (
            "https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA%2F&X-Amz-Signature=ab12&X-Amz-Expires=60",
            "https://b.s3.amazonaws.com/k?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Expires=60",
        ),
        (
            "http://cam/v?Password=a;api_key=b&streamKey=c&sig=d&auth=e&secret=f&access_token=g&key=h",
            "http://cam/v?Password=***;api_key=***&streamKey=***&sig=***&auth=***&secret=***"
            "&access_token=***&key=***",
        ),
        ("http://cam/v?token=&x", "http://cam/v?token=&x"),  # nothing to hide
        ("http://cam/v#access_token=x&state=1", "http://cam/v#access_token=***&state=1"),
        ("http://cam/v#section-2", "http://cam/v#section-2"),
        (
            "kafka://h:9092?sasl.password=p&sasl.username=u",
            "kafka://h:9092?sasl.password=***&sasl.username=u",
        ),
        # malformed: unencoded @ / ? in the password, odd hosts; never an exception
        ("rtsp://admin:p@ss@cam/s", "rtsp://admin:***@cam/s"),
        ("rtsp://admin:pa/ss@cam/s?token=t", "rtsp://admin:***@cam/s?token=***"),
        ("rtsp://admin:pa?ss@cam/s", "rtsp://admin:***@cam/s"),
        ("http://host:8080/users/@me?email=a@b", "http://host:8080/users/@me?email=a@b"),
        ("http://[::1", "http://[::1"),
        ("http://u:p@[::1/x?token=t", "http://u:***@[::1/x?token=***"),
        ("//u:p@host/x", "//u:***@host/x"),
        ("not a url", "not a url"),
        ("", ""),
        ("0", "0"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert redact_url(expected) == expected  # idempotent: redacting a shown URL changes nothing


def test_redact_url_any_input_type() -> None:
    assert redact_url(b"http://u:p@h/?token=t") == "http://u:***@h/?token=***"
    assert redact_url(b"\xff\xfe") == "\ufffd\ufffd"
    assert redact_url(None) == "None"
    assert redact_url(3) == "3"


def test_sensitive_parameter_names() -> None:
    for name in ["token", "TOKEN", "password", "passwd", "pw", "pwd", "secret", "key", "apikey", "sig"]:
        assert is_sensitive_param(name), name
    for name in ["signature", "auth", "authorization", "credential", "session", "x-amz-security-token"]:
        assert is_sensitive_param(name), name
    for name in ["pass%77ord", "sasl.jaas.config", "client_secret", "ssl.key.password"]:
        assert is_sensitive_param(name), name
    for name in ["user", "username", "channel", "subtype", "resolution", "fps", "stream", "sslmode"]:
        assert not is_sensitive_param(name), name


_secret = st.text(st.sampled_from("abcXYZ0189-_.~!$'()*+,%:"), min_size=6, max_size=20)


@given(
    scheme=st.sampled_from(["rtsp", "http", "https", "kafka", "postgresql", "s3"]),
    password=_secret,
    token=_secret,
    param=st.sampled_from(["token", "password", "key", "secret", "sig", "auth", "X-Amz-Signature"]),
    tail=st.text(max_size=30),
)
def test_secrets_never_survive(scheme: str, password: str, token: str, param: str, tail: str) -> None:
    url = f"{scheme}://admin:{password}@host:554/a/b?x=1&{param}={token}&y=2#{tail}"
    shown = redact_url(url).split("#")[0]  # the fragment has no name=value: left as it is
    assert password not in shown and token not in shown
    assert shown.startswith(f"{scheme}://admin:{MASK}@host:554/a/b?x=1&{param}={MASK}&y=2")


@given(st.text(max_size=200) | st.binary(max_size=200))
def test_redact_url_never_raises(junk: str | bytes) -> None:
    assert isinstance(redact_url(junk), str)


# --- where URLs are shown ----------------------------------------------------------------------


def test_camera_source_name_and_errors_hide_credentials() -> None:
    src = CameraSource("rtsp://admin:pw@cam.local/stream?token=abc123&channel=2")
    assert src.name == "rtsp://admin:***@cam.local/stream?token=***&channel=2"
    assert "abc123" not in repr(src)
    assert src.url == "rtsp://admin:pw@cam.local/stream?token=abc123&channel=2"  # what OpenCV opens
    with pytest.raises(Exception) as info:
        CameraSource("ftp://admin:pw@cam.local/stream?token=abc123")
    assert "abc123" not in str(info.value) and ":pw@" not in str(info.value)


def test_postgres_display_url_agrees_with_the_helper() -> None:
    pytest.importorskip("sqlalchemy")
    from visionlake.catalog.postgres import display_url, parse_url

    shown = display_url(parse_url("postgresql+psycopg://u:pw1@db:5432/lake?password=pw2&sslmode=require"))
    assert shown == "postgresql://u:***@db:5432/lake?password=***&sslmode=require"
    assert redact_url(shown) == shown


def test_kafka_url_refuses_userinfo_without_echoing_it() -> None:
    from visionlake.log.kafka.options import parse_url

    with pytest.raises(ConfigError) as info:
        parse_url("kafka://user:s3cret@127.0.0.1:1?sasl.password=other")
    assert "s3cret" not in str(info.value) and "other" not in str(info.value)
    assert "kafka://user:***@127.0.0.1:1" in str(info.value) and "sasl.password" in str(info.value)
    assert parse_url("kafka://h1,h2:9093?a=b") == ("h1:9092,h2:9093", {"a": "b"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISIONLAKE_")}
    env["COLUMNS"] = "1000"  # no wrapping: a secret cut in two would pass a substring check
    cmd = [sys.executable, "-m", "visionlake", "--lake", str(tmp_path / "lake"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)


def test_cli_unreachable_camera_hides_token_and_password(tmp_path: Path) -> None:
    url = f"http://admin:hunter2@127.0.0.1:{_free_port()}/stream?token=tok3n-xyz&channel=1"
    proc = _cli(tmp_path, "ingest", "camera", url, "--camera", "cam1", "--open-attempts", "2")
    assert proc.returncode == 3, proc.stderr
    everything = proc.stdout + proc.stderr
    assert "tok3n-xyz" not in everything and "hunter2" not in everything, everything
    assert "token=***&channel=1" in proc.stderr  # the rest of the URL still helps
    assert "retrying" in proc.stderr  # the warning of the first failed attempt went through it too


def test_cli_kafka_log_with_password_hides_it(tmp_path: Path) -> None:
    pytest.importorskip("confluent_kafka")
    proc = _cli(tmp_path, "--log", "kafka://user:s3cret@127.0.0.1:1", "status", timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "s3cret" not in proc.stdout + proc.stderr
    assert "kafka://user:***@127.0.0.1:1" in proc.stderr


def test_cli_status_hides_archive_credentials(tmp_path: Path) -> None:
    # fsspec's in-memory filesystem stands for a remote archive (ftp://user:pw@..., https://...?sig=)
    archive = "memory://user:pw9secret@host/archive?token=tk9secret"
    with Lake(lake=tmp_path / "lake") as lk:
        lk.catalog  # noqa: B018 - an (empty) lake to show
    for fmt in ("table", "json"):
        proc = _cli(tmp_path, "--archive", archive, "status", "--format", fmt)
        assert proc.returncode == 0, proc.stderr
        everything = proc.stdout + proc.stderr
        assert "pw9secret" not in everything and "tk9secret" not in everything, everything
        assert "memory://user:***@host/archive?token=***" in proc.stdout
