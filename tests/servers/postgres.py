"""A real PostgreSQL server for the test suite, started from the server binaries on this machine.

`postgres_server` (session scope) creates a fresh cluster with `initdb` in a temporary directory,
starts it with `pg_ctl` on a free port (TCP on 127.0.0.1 only, its unix socket in the same directory),
waits until it accepts connections and yields the base URL
``postgresql://postgres@127.0.0.1:PORT/postgres``; at the end it stops the server with
``pg_ctl stop -m immediate`` and removes the directory. `postgres_url` gives each test a fresh, empty
database (``CREATE DATABASE t_<uuid>``) and returns its URL.

PostgreSQL refuses to run as root: when the suite runs as root the directory is handed to the
`postgres` user and `initdb`/`pg_ctl` run through ``runuser -u postgres --``.

Authentication is `trust` for everyone except members of the role ``vl_password_auth``, who must give
a password (scram-sha-256): tests that need a wrong password to really be refused create a login role
in that group (see `create_password_role`).

The cluster runs without fsync (a test server loses nothing worth keeping unless the machine
crashes; commits stay synchronous, so `stop(keep=True)` + `start(keep_port=True)` keeps every commit). Everything skips with an
install hint when the server binaries or psycopg are missing.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

#: members of this role must authenticate with a password over TCP (everyone else: trust)
PASSWORD_GROUP = "vl_password_auth"

_INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql "
    "(or put its bin directory on the PATH)"
)


def pg_bin_dir() -> Path | None:
    """The directory holding initdb and pg_ctl: on the PATH first, then /usr/lib/postgresql/*/bin."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(os.path.realpath(initdb)).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
    )
    for d in reversed(candidates):
        if (Path(d) / "initdb").is_file() and (Path(d) / "pg_ctl").is_file():
            return Path(d)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One throw-away PostgreSQL cluster: `init()`, `start()`, `stop()`, `sql()`."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="vl-pg-"))  # not under pytest's 0700 root-owned tree
        self.data = self.root / "data"
        self.port = 0
        self.as_root = os.geteuid() == 0
        if self.as_root:
            import pwd

            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(self.root, ignore_errors=True)
                pytest.skip("running as root and there is no 'postgres' user to run the server as")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        os.chmod(self.root, 0o755)

    @property
    def base_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str, user: str = "postgres", password: str | None = None) -> str:
        auth = user if password is None else f"{user}:{password}"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def init(self) -> PostgresServer:
        done = self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "--encoding=UTF8",
            "--locale=C",
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        # written by us (root or not) and read by the server: keep it readable for postgres
        hba = self.data / "pg_hba.conf"
        hba.write_text(
            "local all all trust\n"
            f"host all +{PASSWORD_GROUP} 127.0.0.1/32 scram-sha-256\n"
            "host all all 127.0.0.1/32 trust\n"
        )
        os.chmod(hba, 0o644)
        return self

    def start(self, timeout: float = 30, keep_port: bool = False) -> PostgresServer:
        """Start on a free port (or, after `stop(keep=True)`, on the same port) and wait until ready."""
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-k {self.root}",
                "-c fsync=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
                "-c password_encryption=scram-sha-256",
            ]
        )
        last = ""
        first_start = not keep_port
        for _ in range(3):
            if not (keep_port and self.port):
                self.port = _free_port()
            done = self._run(
                "pg_ctl",
                "-D",
                str(self.data),
                "-l",
                str(self.root / "server.log"),
                "-o",
                f"-p {self.port} {options}",
                "-w",
                "-t",
                str(int(timeout)),
                "start",
                timeout=timeout + 10,
            )
            if done.returncode == 0 and self._ready(timeout):
                if first_start:
                    self.sql(f"CREATE ROLE {PASSWORD_GROUP} NOLOGIN")
                return self
            last = f"{done.stdout}\n{done.stderr}\n{self.log_tail()}"
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        raise RuntimeError(f"PostgreSQL did not start:\n{last}")

    def _ready(self, timeout: float) -> bool:
        import psycopg

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.base_url, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return True
            except psycopg.OperationalError:
                time.sleep(0.1)
        return False

    def log_tail(self, n: int = 3000) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def sql(self, statement: str, database: str = "postgres") -> list[tuple]:
        """Run one statement as the superuser, in autocommit (CREATE DATABASE needs it)."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []

    def stop(self, keep: bool = False) -> None:
        """Stop at once (`-m immediate`); remove the cluster unless `keep` (to start it again)."""
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
        finally:
            if not keep:
                shutil.rmtree(self.root, ignore_errors=True)


def _require_postgres() -> Path:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg not installed: pip install 'visionlake[postgres]'")
    bindir = pg_bin_dir()
    if bindir is None:
        pytest.skip(_INSTALL_HINT)
    return bindir


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresServer]:
    """The running test cluster as an object (for tests that need its port or superuser SQL)."""
    server = PostgresServer(_require_postgres())
    try:
        server.init().start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server(postgres_cluster) -> str:
    """Base URL of a running PostgreSQL: ``postgresql://postgres@127.0.0.1:PORT/postgres``."""
    return postgres_cluster.base_url


@pytest.fixture
def postgres_url(postgres_cluster) -> str:
    """URL of a fresh, empty database for one test."""
    name = f"t_{uuid.uuid4().hex}"
    postgres_cluster.sql(f"CREATE DATABASE {name}")
    return postgres_cluster.url(name)


def create_password_role(
    server: PostgresServer, user: str, password: str, *, superuser: bool = False
) -> None:
    """A login role that really has to give `password` (it joins PASSWORD_GROUP)."""
    extra = " SUPERUSER" if superuser else ""
    server.sql(f"CREATE ROLE {user} LOGIN PASSWORD '{password}' IN ROLE {PASSWORD_GROUP}{extra}")
