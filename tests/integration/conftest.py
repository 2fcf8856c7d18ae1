"""Integration tests: real PostgreSQL, Redis and a Celery worker process.

They need DATABASE_URL (PostgreSQL) and REDIS_URL. Without them they skip, saying why;
with REQUIRE_SERVICES=1 (set by CI) a missing service fails the run instead.
"""

import os
import time
import uuid
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.test import override_settings

from config.celery import app as celery_app
from providers.registry import reset_providers
from tests.conftest import smtp_settings, twilio_settings
from tests.worker import Worker

ROOT = Path(__file__).resolve().parents[2]


def _missing_services() -> list[str]:
    missing = []
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        missing.append("DATABASE_URL does not point at PostgreSQL")
    if not settings.REDIS_URL:
        missing.append("REDIS_URL is not set")
    else:
        try:
            redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2).ping()
        except redis.RedisError as exc:
            missing.append(f"Redis at REDIS_URL does not answer ({exc.__class__.__name__})")
    return missing


def pytest_collection_modifyitems(config, items):
    here = str(Path(__file__).parent)
    integration = [item for item in items if str(item.fspath).startswith(here)]
    if not integration:
        return
    missing = _missing_services()
    if not missing:
        return
    reason = "integration services unavailable: " + "; ".join(missing)
    if os.environ.get("REQUIRE_SERVICES") == "1":
        raise pytest.UsageError(f"REQUIRE_SERVICES=1 but {reason}")
    for item in integration:
        item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def stack(django_db_setup, django_db_blocker, live_server, twilio_server, smtp_server_session, tmp_path_factory):
    """PostgreSQL test database + Redis + a real worker + the provider doubles + a live API
    that the Twilio double posts its status callbacks to."""
    queue = f"beacon-test-{uuid.uuid4().hex[:8]}"
    db = connection.settings_dict
    database_url = f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"
    overrides = {
        **twilio_settings(twilio_server),
        **smtp_settings(smtp_server_session),
        "PUBLIC_BASE_URL": live_server.url,
    }
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": settings.REDIS_URL,
        "BEACON_QUEUE": queue,
        "BEACON_RETRY_BASE_SECONDS": "0.2",
        "BEACON_MAX_ATTEMPTS": "4",
        "CELERY_WORKER_PREFETCH_MULTIPLIER": "1",
        **{name: str(value) for name, value in overrides.items()},
    }
    env.pop("CELERY_TASK_ALWAYS_EAGER", None)
    worker = Worker(env, queue, tmp_path_factory.mktemp("worker") / "worker.log")
    previous_queue = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = queue
    with override_settings(**overrides):
        reset_providers()
        worker.start()
        try:
            yield worker
        finally:
            worker.stop()
            celery_app.conf.task_default_queue = previous_queue
            redis.Redis.from_url(settings.REDIS_URL).delete(queue)
            reset_providers()


@pytest.fixture
def real_worker(stack, twilio_server, smtp_server_session):
    """Tasks go to Redis and the worker process, not in-process."""
    twilio_server.reset()
    smtp_server_session.reset()
    celery_app.conf.task_always_eager = False
    yield stack
    twilio_server.wait_for_callbacks()


def wait_for(predicate, *, timeout: float = 30, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


@pytest.fixture
def workers(stack, tmp_path):
    """Start worker processes (after the records exist, so that they see them at once) on
    a queue of their own; the API publishes there while they run."""
    started = []

    def start(concurrency: int, **env) -> Worker:
        queue = f"beacon-workers-{uuid.uuid4().hex[:8]}"
        worker = Worker(
            {**stack.env, "BEACON_QUEUE": queue, "BEACON_ALLOW_PRIVATE_TARGETS": "1", **env},
            queue,
            tmp_path / f"worker-{len(started)}.log",
            concurrency=concurrency,
        )
        started.append(worker.start())
        celery_app.conf.task_default_queue = queue
        return worker

    previous = (celery_app.conf.task_default_queue, celery_app.conf.task_always_eager)
    celery_app.conf.task_always_eager = False
    yield start
    for worker in started:
        worker.stop()
    celery_app.conf.task_default_queue, celery_app.conf.task_always_eager = previous
