"""Settings: command-line flags over environment variables over the lake's config file over defaults.

The lake directory (default ./visionlake-data, `--lake`, or VISIONLAKE_HOME) holds the embedded log,
catalog and archive unless URLs point elsewhere. `<lake>/visionlake.toml` may set::

    log = "sqlite:///..."        # or kafka://host:9092
    catalog = "sqlite:///..."
    archive = "/data/archive"    # any fsspec URL: a directory, file://..., s3://bucket/prefix
    [log_options]                # passed to the log backend, e.g. session_timeout = 10
    [archive_options]            # passed to the archive's filesystem (fsspec storage_options)

Environment variables: VISIONLAKE_HOME, VISIONLAKE_LOG, VISIONLAKE_CATALOG, VISIONLAKE_ARCHIVE. An S3
archive also reads the standard AWS ones itself (through botocore): AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3), AWS_REGION,
AWS_PROFILE, and ~/.aws/credentials and ~/.aws/config. `[archive_options]` overrides them, e.g. for an
S3-compatible server::

    archive = "s3://frames/lake1"
    [archive_options]
    endpoint_url = "http://minio.local:9000"
    key = "AKIA..."              # prefer the environment or ~/.aws for the secret
    secret = "..."
    retry_seconds = 120          # how long to ride out an outage (visionlake's own option)
    [archive_options.config_kwargs]
    read_timeout = 30            # botocore settings: timeouts, retries
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

DEFAULT_LAKE = "visionlake-data"
CONFIG_FILE = "visionlake.toml"
ENV = {
    "lake": "VISIONLAKE_HOME",
    "log": "VISIONLAKE_LOG",
    "catalog": "VISIONLAKE_CATALOG",
    "archive": "VISIONLAKE_ARCHIVE",
}


@dataclass(frozen=True)
class Settings:
    lake: Path
    log: str
    catalog: str
    archive: str
    log_options: dict = field(default_factory=dict)
    archive_options: dict = field(default_factory=dict, repr=False)  # may hold a secret: never printed


def load_settings(
    lake: str | Path | None = None,
    log: str | None = None,
    catalog: str | None = None,
    archive: str | None = None,
) -> Settings:
    root = Path(lake or os.environ.get(ENV["lake"]) or DEFAULT_LAKE).expanduser()
    file_cfg: dict = {}
    cfg_path = root / CONFIG_FILE
    if cfg_path.is_file():
        try:
            file_cfg = tomllib.loads(cfg_path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"cannot parse {cfg_path}: {e}") from e
        unknown = set(file_cfg) - {"log", "catalog", "archive", "log_options", "archive_options"}
        if unknown:
            raise ConfigError(f"{cfg_path}: unknown settings {sorted(unknown)}")

    def pick(name: str, flag: str | None, default: str) -> str:
        value = flag or os.environ.get(ENV[name]) or file_cfg.get(name) or default
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"setting {name!r} must be a non-empty string, got {value!r}")
        return value

    def table(name: str) -> dict:
        value = file_cfg.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{cfg_path}: {name} must be a table ([{name}]), got a {type(value).__name__}")
        return dict(value)

    resolved = root.resolve()
    return Settings(
        lake=root,
        log=pick("log", log, f"sqlite://{resolved / 'log'}"),
        catalog=pick("catalog", catalog, f"sqlite:///{resolved / 'catalog.db'}"),
        archive=pick("archive", archive, str(resolved / "archive")),
        log_options=dict(file_cfg.get("log_options", {})),
        archive_options=table("archive_options"),
    )
