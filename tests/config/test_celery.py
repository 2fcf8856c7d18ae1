"""Workers keep their database connection across tasks (Celery's Django fix-up would
otherwise close it around every task), and close it as Django does for a request."""

from unittest import mock

import pytest
from celery.fixups.django import DjangoWorkerFixup
from django.db import connection

from config.celery import _close_old_connections, app

pytestmark = pytest.mark.django_db


# Outside a transaction, where a close really closes; on PostgreSQL (CI), since Django
# never closes SQLite's in-memory test database.
@pytest.mark.django_db(transaction=True)
def test_the_worker_fixup_leaves_the_connection_open_between_tasks():
    # given: the fix-up as a worker process builds it
    fixup = DjangoWorkerFixup(app)
    connection.ensure_connection()
    opened = connection.connection
    # when: what it runs before and after each of many tasks
    for _ in range(100):
        fixup.close_database()
    # then
    assert connection.connection is opened


@pytest.mark.parametrize(
    ("eager", "closes"),
    [(False, 1), (True, 0)],
    ids=["a worker's task closes an obsolete connection as a request would", "an in-process task leaves it alone"],
)
def test_tasks_close_old_connections_like_requests(eager, closes):
    task = mock.Mock()
    task.request.is_eager = eager
    with mock.patch("django.db.close_old_connections") as close_old:
        _close_old_connections(task=task)
    assert close_old.call_count == closes
