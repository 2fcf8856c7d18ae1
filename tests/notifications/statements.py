"""Counting the statements a piece of the send path runs, the same way on SQLite and PostgreSQL."""

import contextlib
import sqlite3
from unittest import mock

from django.db import connection
from django.test.utils import CaptureQueriesContext

SAVEPOINT_STATEMENTS = ("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT")


@contextlib.contextmanager
def real_parameter_limit():
    """Django's SQLite backend assumes SQLite's old limit of 999 parameters a statement and
    splits a bulk write of a hundred rows into several statements, which PostgreSQL never
    does. Count what the code asks for, under the limit of the SQLite actually linked."""
    if connection.vendor != "sqlite":
        yield
        return
    connection.ensure_connection()
    limit = connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    with mock.patch.object(connection.features, "max_query_params", limit):
        yield


class Statements(CaptureQueriesContext):
    """The statements run inside the block, without the SAVEPOINT / RELEASE pairs that the
    test's own transaction turns each atomic block into (BEGIN / COMMIT outside tests)."""

    def __init__(self):
        super().__init__(connection)

    @property
    def savepoints(self) -> list[str]:
        return [q["sql"] for q in self.captured_queries if q["sql"].startswith(SAVEPOINT_STATEMENTS)]

    @property
    def executed(self) -> list[str]:
        return [q["sql"] for q in self.captured_queries if not q["sql"].startswith(SAVEPOINT_STATEMENTS)]

    @property
    def writes(self) -> list[str]:
        return [sql for sql in self.executed if sql.startswith(("INSERT", "UPDATE", "DELETE", "COPY"))]
