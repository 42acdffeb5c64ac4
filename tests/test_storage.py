from __future__ import annotations

import sqlite3
import subprocess
import sys

import optuna
from optuna.storages import JournalStorage
from optuna.storages import RDBStorage
import pytest

import optuna_opplan as op
from optuna_opplan._storage import redact
from optuna_opplan._storage import storage_label


def test_sqlite_transactions_begin_immediate(tmp_path) -> None:
    storage = op.create_storage(f"sqlite:///{tmp_path / 'x.db'}")
    assert isinstance(storage, RDBStorage)
    statements: list[str] = []
    from sqlalchemy import event

    @event.listens_for(storage.engine, "before_cursor_execute")
    def record(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    optuna.create_study(storage=storage, study_name="s")
    assert "BEGIN IMMEDIATE" in statements
    with sqlite3.connect(tmp_path / "x.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_harden_is_idempotent_and_wraps_cached_storage(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'y.db'}"
    study = optuna.create_study(storage=url)  # optuna wraps RDBStorage in a cache
    assert op.harden_storage(study._storage) is study._storage
    assert op.harden_storage(study._storage) is study._storage
    backend = study._storage._backend  # type: ignore[attr-defined]
    assert backend.engine._opplan_begin_immediate is True


def test_a_writer_holding_the_lock_serialises_claims(tmp_path) -> None:
    # The property exactly-once rests on: while one connection is inside a transaction, a claim
    # from another process waits for it instead of reading a stale "WAITING".
    path = tmp_path / "z.db"
    storage = op.create_storage(f"sqlite:///{path}")
    study = optuna.create_study(storage=storage)
    study.enqueue_trial({"x": 1})
    trial_id = study.trials[0]._trial_id
    holder = sqlite3.connect(path, isolation_level=None, timeout=30)
    holder.execute("BEGIN IMMEDIATE")
    code = (
        "import optuna_opplan as op, optuna\n"
        f"s = op.create_storage('sqlite:///{path}', timeout=0.5)\n"
        "from optuna.trial import TrialState\n"
        "try:\n"
        f"    s.set_trial_state_values({trial_id}, TrialState.RUNNING)\n"
        "    print('claimed')\n"
        "except Exception as e:\n"
        "    print('locked', type(e).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    holder.execute("ROLLBACK")
    holder.close()
    assert "locked" in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("name", ["plan.log", "plan.journal", "sub/dir/plan.jsonl"])
def test_journal_paths(tmp_path, name) -> None:
    if "/" in name:  # never created in a missing folder: a typo would start an empty study
        with pytest.raises(FileNotFoundError, match="the folder .*sub/dir does not exist"):
            op.create_storage(str(tmp_path / name))
        assert not (tmp_path / "sub").exists()
        (tmp_path / name).parent.mkdir(parents=True)
    storage = op.create_storage(str(tmp_path / name))
    assert isinstance(storage, JournalStorage)
    optuna.create_study(storage=storage, study_name="j")
    assert (tmp_path / name).exists()
    assert storage_label(storage).startswith("journal:")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "must be a storage URL"),
        ("plan.txt", "neither a storage URL"),
        ("nosuchdb://u:secret@h/x", "Can't load plugin|nosuchdb"),
    ],
)
def test_bad_urls_fail_clearly(url: str, message: str) -> None:
    with pytest.raises(Exception, match=message) as info:
        op.create_storage(url)
    assert "secret" not in str(info.value) or "nosuchdb" in url


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://alice:s3cret@db:5432/x", "postgresql://alice:***@db:5432/x"),
        ("at mysql+pymysql://bob:p%40ss@h/x now", "at mysql+pymysql://bob:***@h/x now"),
        ("sqlite:///tmp/x.db", "sqlite:///tmp/x.db"),
        ("postgresql://carol@db/x", "postgresql://carol@db/x"),
    ],
)
def test_passwords_are_masked(text: str, expected: str) -> None:
    assert redact(text) == expected
    assert "s3cret" not in storage_label(text)


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_a_storage_in_a_missing_folder_is_one_clear_error(tmp_path, kind) -> None:
    folder = tmp_path / "typo"
    url = str(folder / "plan.log") if kind == "journal" else f"sqlite:///{folder / 'plan.db'}"
    with pytest.raises(FileNotFoundError, match=f"the folder {folder} does not exist"):
        op.create_storage(url)
    with pytest.raises(FileNotFoundError, match="there is no file"):
        op.create_storage(str(tmp_path / "x.log"), must_exist=True)
    assert not folder.exists() and not (tmp_path / "x.log").exists()
