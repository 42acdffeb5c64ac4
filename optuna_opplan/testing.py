"""Test helpers shared by the test suite and the benchmarks: throw-away local servers.

:class:`PostgresServer` runs ``initdb``/``pg_ctl`` in a temporary directory, listening on
127.0.0.1 only (as the ``postgres`` user when run as root, since PostgreSQL refuses root). The
fault tests restart it mid-run with :meth:`PostgresServer.restart`; ``benchmarks/soak.py`` and
``benchmarks/grid_duplicates.py`` start their own. :class:`S3Server` runs an S3-compatible
server (moto's) in a child process on 127.0.0.1. No torch import here.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any
import uuid

__all__ = ["PostgresServer", "PostgresUnavailable", "S3Server", "find_postgres_bin"]

INSTALL_HINT = "apt-get install -y postgresql"


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server binaries are missing or the server did not start."""


def find_postgres_bin() -> str:
    """The directory holding ``initdb`` and ``pg_ctl``, preferring the newest Debian version."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl", path=os.path.dirname(found)):
        return os.path.dirname(found)
    for folder in sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0,
        reverse=True,
    ):
        if os.path.exists(os.path.join(folder, "initdb")) and os.path.exists(
            os.path.join(folder, "pg_ctl")
        ):
            return folder
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found on PATH nor in "
        f"/usr/lib/postgresql/*/bin; install Debian's server package: `{INSTALL_HINT}`."
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """A throw-away PostgreSQL server in a temporary directory, on 127.0.0.1 only.

    PostgreSQL refuses to run as root, so when we are root the server runs as the
    ``postgres`` system user (or ``nobody``), which owns the temporary directory. Use as a
    context manager; :meth:`create_database` gives each test its own database.
    """

    def __init__(self) -> None:
        self.bin = find_postgres_bin()
        self.tmp = ""
        self.port = 0
        self._user: pwd.struct_passwd | None = None
        self._options = ""

    # ------------------------------------------------------------------------ lifecycle
    def start(self) -> PostgresServer:
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    self._user = pwd.getpwnam(name)
                    break
                except KeyError:
                    continue
            else:
                raise PostgresUnavailable(
                    "Running as root and neither a `postgres` nor a `nobody` user exists to run "
                    "the PostgreSQL server as (it refuses to run as root)."
                )
        self.tmp = tempfile.mkdtemp(prefix="opplan-pg-")
        if self._user is not None:
            os.chown(self.tmp, self._user.pw_uid, self._user.pw_gid)
        data = os.path.join(self.tmp, "data")
        self._run("initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        last_error = ""
        # The free port may be taken between choosing and binding it: try a few.
        for _ in range(3):
            self.port = _free_port()
            # fsync off: the tests exercise concurrency, not crash durability of the server.
            options = (
                f"-h 127.0.0.1 -p {self.port} -k {self.tmp} -c fsync=off "
                "-c max_connections=300 -c shared_buffers=32MB"
            )
            log = os.path.join(self.tmp, "server.log")
            try:
                self._run("pg_ctl", "-D", data, "-l", log, "-w", "-o", options, "start")
                self._options = options
                return self
            except PostgresUnavailable as exc:
                last_error = str(exc)
                if os.path.exists(log):
                    with open(log) as f:
                        last_error += "\nserver log:\n" + f.read()[-2000:]
        self.stop()
        raise PostgresUnavailable(f"The PostgreSQL server did not start: {last_error}")

    def stop(self) -> None:
        if not self.tmp:
            return
        data = os.path.join(self.tmp, "data")
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            with contextlib.suppress(PostgresUnavailable):
                self._run("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = ""

    def restart(self, mode: str = "fast", *, down_seconds: float = 0.0) -> None:
        """Restart the server on the same port and data: every open connection is cut.

        ``mode`` is ``pg_ctl``'s shutdown mode: ``"fast"`` (abort sessions, clean shutdown) or
        ``"immediate"`` (like a crash: recovery on start). With ``down_seconds`` the server
        stays stopped that long, so clients also meet refused connections.
        """
        if not self.tmp:
            raise PostgresUnavailable("The server is not running: start() it first.")
        data = os.path.join(self.tmp, "data")
        log = os.path.join(self.tmp, "server.log")
        # pg_ctl restart reuses the start options (postmaster.opts); -l keeps the server's
        # output off our pipe, which would otherwise never reach end-of-file.
        if down_seconds <= 0:
            self._run("pg_ctl", "-D", data, "-l", log, "-m", mode, "-w", "restart")
            return
        self._run("pg_ctl", "-D", data, "-m", mode, "-w", "stop")
        time.sleep(down_seconds)
        self._run("pg_ctl", "-D", data, "-l", log, "-w", "-o", self._options, "start")

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------------------------- queries
    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """Create a fresh database and return its SQLAlchemy URL."""
        import psycopg2

        name = name or f"opplan_{uuid.uuid4().hex[:12]}"
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres")
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with conn.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.url(name)

    def _run(self, tool: str, *args: str) -> None:
        user = self._user
        result = subprocess.run(
            [os.path.join(self.bin, tool), *args],
            cwd=self.tmp,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
            user=None if user is None else user.pw_uid,
            group=None if user is None else user.pw_gid,
            extra_groups=None if user is None else [],
            timeout=120,
        )
        if result.returncode != 0:
            raise PostgresUnavailable(
                f"`{tool} {' '.join(args)}` exited with {result.returncode}:\n{result.stdout}"
            )


class S3Server:
    """A throw-away S3-compatible server (moto's, from PyPI) on 127.0.0.1, in a child process.

    Any S3 client talks to it through :attr:`endpoint_url` with any credentials; its objects
    live in memory and vanish with :meth:`stop`. Use as a context manager.

    Example:
        >>> with S3Server() as server:
        ...     client = server.client()
        ...     _ = client.create_bucket(Bucket="checkpoints")
        ...     [bucket["Name"] for bucket in client.list_buckets()["Buckets"]]
        ['checkpoints']
    """

    def __init__(self) -> None:
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: str = ""

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> S3Server:
        for _ in range(3):  # the free port may be taken before the server binds it
            self.port = _free_port()
            fd, self._log = tempfile.mkstemp(prefix="opplan-s3-", suffix=".log")
            with os.fdopen(fd, "wb") as log:
                self._process = subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self._process.poll() is None:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", self.port), timeout=1.0),
                ):
                    return self
                time.sleep(0.1)
            self.stop()
        raise RuntimeError(
            "The S3-compatible test server (`python -m moto.server`) did not start: install "
            "the test dependencies (`pip install 'moto[server]'`, done by `make test`)."
        )

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._log:
            with contextlib.suppress(OSError):
                os.remove(self._log)
            self._log = ""

    def client(self) -> Any:
        """A boto3 S3 client for this server (dummy credentials, region us-east-1)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
