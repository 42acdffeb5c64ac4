from __future__ import annotations

import os
import random
import re
import time
from typing import Any

from optuna.storages import BaseStorage
from optuna.storages import JournalStorage
from optuna.storages import RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.storages.journal import JournalFileOpenLock
import sqlalchemy
from sqlalchemy import event

_HARDENED = "_opplan_begin_immediate"
JOURNAL_SUFFIXES = (".log", ".journal", ".jsonl")


def create_storage(url: str, *, timeout: float = 60.0) -> BaseStorage:
    """An Optuna storage that several worker processes can share safely.

    - ``sqlite:///path.db``: an :class:`~optuna.storages.RDBStorage` whose transactions start
      with ``BEGIN IMMEDIATE``, so two workers can never both claim the same waiting trial
      (plain SQLite reads and writes in separate steps; see :func:`harden_storage`).
    - ``postgresql://...`` and other SQLAlchemy URLs: an ``RDBStorage`` with pre-ping, so a
      worker survives a restarted server.
    - a file path ending in ``.log``, ``.journal`` or ``.jsonl`` (or ``journal:///path``): a
      :class:`~optuna.storages.JournalStorage` on that file, with an ``open``-based lock that
      works on NFS too.

    Args:
        url: The storage URL or journal file path.
        timeout: Seconds a SQLite writer waits for the lock before failing.

    Example:

        >>> import tempfile, os
        >>> import optuna_opplan as op
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     storage = op.create_storage(f"sqlite:///{os.path.join(tmp, 'plan.db')}")
        ...     journal = op.create_storage(os.path.join(tmp, "plan.log"))
    """
    if not isinstance(url, str) or not url:
        raise ValueError(f"`url` must be a storage URL or a journal file path, but got {url!r}.")
    if url.startswith("journal://"):
        return _journal(url[len("journal://") :])
    if "://" not in url:
        if url.endswith(JOURNAL_SUFFIXES):
            return _journal(url)
        raise ValueError(
            f"{redact(url)!r} is neither a storage URL (sqlite:///..., postgresql://...) nor a "
            f"journal file path ending in {JOURNAL_SUFFIXES}."
        )
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


def _journal(path: str) -> JournalStorage:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
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
