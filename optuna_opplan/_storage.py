from __future__ import annotations

import os
import random
import re
import time
from typing import Any

import optuna
from optuna.exceptions import StorageInternalError
from optuna.storages import BaseStorage
from optuna.storages import JournalStorage
from optuna.storages import RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal import JournalFileOpenLock
import sqlalchemy
from sqlalchemy import event

_HARDENED = "_opplan_begin_immediate"
JOURNAL_SUFFIXES = (".log", ".journal", ".jsonl")

_logger = optuna.logging.get_logger("optuna.opplan")

# A worker that meets a storage error (a restarted database server, a dropped connection)
# waits and scans again, up to STORAGE_RETRIES times in a row with doubling pauses from
# STORAGE_BACKOFF to MAX_STORAGE_BACKOFF seconds (about 45 s in all), then gives up with a
# StorageUnavailableError. A transition interrupted by the error fails and is retried.
STORAGE_RETRIES = 8
STORAGE_BACKOFF = 0.5
MAX_STORAGE_BACKOFF = 10.0
STORAGE_ERRORS = (StorageInternalError, sqlalchemy.exc.OperationalError)


class StorageUnavailableError(RuntimeError):
    """The study's storage kept failing (a database down longer than the worker waits)."""


def create_storage(url: str, *, timeout: float = 60.0, must_exist: bool = False) -> BaseStorage:
    """An Optuna storage that several worker processes can share safely.

    - ``sqlite:///path.db``: an :class:`~optuna.storages.RDBStorage` whose transactions start
      with ``BEGIN IMMEDIATE``, so two workers can never both claim the same waiting trial
      (plain SQLite reads and writes in separate steps; see :func:`harden_storage`).
    - ``postgresql://...`` and other SQLAlchemy URLs: an ``RDBStorage`` with pre-ping, so a
      worker survives a restarted server.
    - a file path ending in ``.log``, ``.journal`` or ``.jsonl`` (or ``journal:///path``): a
      :class:`~optuna.storages.JournalStorage` on that file, with an ``open``-based lock that
      works on NFS too.

    A SQLite or journal file is created when missing, but never in a missing folder: a typo
    in the path is an error naming it, not an empty study somewhere else.

    Args:
        url: The storage URL or journal file path.
        timeout: Seconds a SQLite writer waits for the lock before failing.
        must_exist: Refuse to create a missing SQLite or journal file (for tools that only
            read a study).

    Raises:
        FileNotFoundError: if the file's folder does not exist, or ``must_exist`` and the
            file does not.
        ValueError: if ``url`` is neither a storage URL nor a journal file path.

    Example:

        >>> import tempfile, os
        >>> import optuna_opplan as op
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     storage = op.create_storage(f"sqlite:///{os.path.join(tmp, 'plan.db')}")
        ...     journal = op.create_storage(os.path.join(tmp, "plan.log"))
    """
    if not isinstance(url, str) or not url:
        raise ValueError(f"`url` must be a storage URL or a journal file path, but got {url!r}.")
    if "://" not in url and not url.endswith(JOURNAL_SUFFIXES):
        raise ValueError(
            f"{redact(url)!r} is neither a storage URL (sqlite:///..., postgresql://...) nor a "
            f"journal file path ending in {JOURNAL_SUFFIXES}."
        )
    path = local_file(url)
    if path is not None:
        _check_path(url, path, must_exist)
    if url.startswith("journal://") or "://" not in url:
        assert path is not None
        return _journal(path)
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": timeout}
    else:
        engine_kwargs["pool_pre_ping"] = True
    storage = _rdb_storage(url, engine_kwargs)
    harden_storage(storage)
    return storage


def _rdb_storage(url: str, engine_kwargs: dict[str, Any], attempts: int = 6) -> RDBStorage:
    # Workers started together on an empty database race to create Optuna's tables and to
    # stamp its schema version; the losers fail with "table already exists" or a unique
    # violation. The winner finishes the schema a moment later, so trying again succeeds.
    for attempt in range(attempts):
        try:
            return RDBStorage(url, engine_kwargs=engine_kwargs)
        except sqlalchemy.exc.DBAPIError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * 2**attempt * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")


def local_file(url: str) -> str | None:
    """The file a journal path or a ``sqlite:///`` URL names; :obj:`None` for anything else
    (a server, an in-memory SQLite database).

    Example:
        >>> local_file("sqlite:///runs/plan.db"), local_file("plan.log")
        ('runs/plan.db', 'plan.log')
        >>> local_file("postgresql://db/optuna") is None, local_file("sqlite://") is None
        (True, True)
    """
    if url.startswith("journal://"):
        return url[len("journal://") :]
    if "://" not in url:
        return url
    if not url.startswith("sqlite"):
        return None
    try:
        database = sqlalchemy.engine.make_url(url).database
    except sqlalchemy.exc.ArgumentError:
        return None
    return None if not database or database == ":memory:" else database


def _check_path(url: str, path: str, must_exist: bool) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"Storage {redact(url)}: the folder {folder} does not exist. Create it first (a "
            "storage file is never created in a missing folder, so that a typo in the path "
            "cannot start an empty study elsewhere)."
        )
    if must_exist and not os.path.exists(path):
        raise FileNotFoundError(
            f"Storage {redact(url)}: there is no file {os.path.abspath(path)} (is the path "
            "right? `opplan init`, create_planning_study or a worker creates it)."
        )


def _journal(path: str) -> JournalStorage:
    return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))


def harden_storage(storage: BaseStorage) -> BaseStorage:
    """Make an SQLite ``RDBStorage`` safe for concurrent workers; other storages pass through.

    Python's sqlite3 driver runs the read of "is this trial still waiting?" and the write that
    claims it in separate transactions, so two processes can both claim it. Starting every
    transaction with ``BEGIN IMMEDIATE`` takes the database's write lock first and makes the
    read-then-write atomic. Idempotent.
    """
    rdb = _rdb_backend(storage)
    if rdb is None or rdb.engine.dialect.name != "sqlite" or getattr(rdb.engine, _HARDENED, False):
        return storage
    engine = rdb.engine

    @event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        # WAL lets readers run beside the writer; NORMAL sync stays crash-safe in WAL mode and
        # spares an fsync per commit, which heartbeats and per-epoch reports would pay.
        dbapi_connection.execute("PRAGMA journal_mode=WAL")
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: sqlalchemy.engine.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    setattr(engine, _HARDENED, True)
    # Pooled connections predate the listeners: drop them so every connection gets the rule.
    engine.dispose()
    return storage


def _rdb_backend(storage: BaseStorage) -> RDBStorage | None:
    if isinstance(storage, RDBStorage):
        return storage
    backend = getattr(storage, "_backend", None)  # optuna's _CachedStorage wraps RDBStorage
    return backend if isinstance(backend, RDBStorage) else None


def storage_label(storage: BaseStorage | str) -> str:
    """A printable name for a storage, with any password masked."""
    if isinstance(storage, str):
        return redact(storage)
    rdb = _rdb_backend(storage)
    if rdb is not None:
        return redact(rdb.url)
    if isinstance(storage, JournalStorage):
        backend = getattr(storage, "_backend", None)
        path = getattr(backend, "_file_path", None)
        return f"journal:{path}" if path else "journal"
    return type(storage).__name__


_PASSWORD_IN_URL = re.compile(r"(?P<head>[a-zA-Z][\w+.-]*://[^/\s:@]*:)[^@\s/]*(?=@)")


def redact(text: str) -> str:
    """Mask the password of every URL in ``text`` (logs and errors must never show one).

    Example:
        >>> redact("cannot reach postgresql://alice:s3cret@db:5432/optuna")
        'cannot reach postgresql://alice:***@db:5432/optuna'
    """
    return _PASSWORD_IN_URL.sub(r"\g<head>***", text)


def storage_pause(
    storage: BaseStorage, exc: Exception, failures: int, unrecorded: str | None
) -> None:
    """Wait before the next scan after the ``failures``-th storage error in a row, or raise
    :class:`StorageUnavailableError` after too many (naming ``unrecorded``, an outcome that
    could not be written)."""
    label = storage_label(storage)
    # The root cause's first line (Optuna's StorageInternalError hides it behind a generic
    # message; SQLAlchemy appends the statement and its parameters), password masked.
    cause: BaseException = exc
    while cause.__cause__ is not None:
        cause = cause.__cause__
    lines = str(cause).strip().splitlines()
    error = redact(f"{type(exc).__name__}: {lines[0] if lines else type(cause).__name__}")
    if failures > STORAGE_RETRIES:
        # Not chained: the driver's exception may quote connection details.
        lost = (
            f" The outcome of {unrecorded} could not be recorded: its trial stays RUNNING "
            "until another worker's grace period ends, then it is retried."
            if unrecorded
            else ""
        )
        raise StorageUnavailableError(
            f"The storage {label} failed {failures} times in a row; last error: {error}.{lost} "
            "The study is consistent: start the worker again once the storage is back."
        ) from None
    pause = min(STORAGE_BACKOFF * 2 ** (failures - 1), MAX_STORAGE_BACKOFF)
    _logger.warning(
        f"Storage {label} failed ({error}); attempt {failures} of {STORAGE_RETRIES} to carry "
        f"on in {pause:.1f}s."
    )
    time.sleep(pause * random.uniform(0.75, 1.25))
