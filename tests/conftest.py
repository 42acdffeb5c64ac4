"""Shared fixtures: a real PostgreSQL server started for the test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from optuna_opplan.testing import PostgresServer
from optuna_opplan.testing import PostgresUnavailable
from optuna_opplan.testing import find_postgres_bin

__all__ = ["PostgresServer", "PostgresUnavailable", "find_postgres_bin"]


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
