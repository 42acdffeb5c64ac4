"""Shared fixtures: a real PostgreSQL server started for the test session, worker fleets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
import pytest

from optuna_opplan.testing import PostgresServer
from optuna_opplan.testing import PostgresUnavailable
from optuna_opplan.testing import find_postgres_bin

if TYPE_CHECKING:
    from test_concurrency import Fleet

__all__ = ["PostgresServer", "PostgresUnavailable", "find_postgres_bin"]


@pytest.fixture(autouse=True)
def _keep_optuna_verbosity() -> Iterator[None]:
    """A test that sets Optuna's verbosity (a benchmark's ``main()`` run in-process does) must
    not silence the log lines that later tests read."""
    level = optuna.logging.get_verbosity()
    yield
    optuna.logging.set_verbosity(level)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """Worker processes for one test (``test_concurrency.Fleet``), killed at teardown."""
    from test_concurrency import Fleet

    fleet = Fleet(tmp_path)
    try:
        yield fleet
    finally:
        fleet.kill_all()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole session (one per xdist worker process).

    Fails, never skips, when the server binaries are missing: CI machines have them.
    """
    try:
        server = PostgresServer().start()
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """The SQLAlchemy URL of the session server's default database."""
    return postgres_server.url()


@pytest.fixture
def postgres_database_url(postgres_server: PostgresServer) -> str:
    """The URL of a fresh, empty database on the session server, for one test."""
    return postgres_server.create_database()
