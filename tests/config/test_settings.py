"""Settings come from the environment; a bad value stops start-up with a clear error."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from providers.registry import CHANNEL_SETTINGS, PROVIDER_CLASSES

ROOT = Path(__file__).resolve().parents[2]


def load(env: dict, expression: str = "None") -> subprocess.CompletedProcess:
    """Import the settings in a fresh interpreter with this environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ANYMAIL_", "BEACON_", "EMAIL_", "TWILIO_"))}
    script = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        f"print(json.dumps({expression}, default=str))"
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "env,message",
    [
        ({"BEACON_SMS_PROVIDER": "twillio"}, "BEACON_SMS_PROVIDER must be one of console, twilio; got 'twillio'"),
        ({"BEACON_EMAIL_PROVIDER": "sendgird"}, "BEACON_EMAIL_PROVIDER must be one of amazon_ses, brevo, console"),
        ({"EMAIL_USE_TLS": "1", "EMAIL_USE_SSL": "1"}, "EMAIL_USE_TLS and EMAIL_USE_SSL are exclusive"),
        ({"EMAIL_PORT": "twenty-five"}, "EMAIL_PORT must be an integer, got 'twenty-five'"),
        ({"DEBUG": "maybe"}, "DEBUG must be a boolean"),
        ({"PUBLIC_BASE_URL": "beacon.example.com"}, "PUBLIC_BASE_URL must be an http(s) URL"),
        ({"ANYMAIL_REQUESTS_TIMEOUT": "soon"}, "ANYMAIL_REQUESTS_TIMEOUT must be a number of seconds"),
        ({"BEACON_MAX_ATTEMPTS": "0"}, "BEACON_MAX_ATTEMPTS must be at least 1, got 0"),
    ],
)
def test_a_bad_value_stops_start_up_naming_the_variable(env, message):
    result = load(env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_empty_values_mean_unset_and_anymail_values_are_typed():
    result = load(
        {
            "EMAIL_BACKEND": "",
            "BEACON_QUEUE": "",
            "ANYMAIL_IGNORE_RECIPIENT_STATUS": "false",
            "ANYMAIL_REQUESTS_TIMEOUT": "7",
            "ANYMAIL_SENDGRID_API_KEY": "SG.x",
            "ANYMAIL_WEBHOOK_SECRET": "",
        },
        "[s.EMAIL_BACKEND, s.CELERY_TASK_DEFAULT_QUEUE, s.ANYMAIL]",
    )
    assert result.returncode == 0, result.stderr
    backend, queue, anymail = json.loads(result.stdout)
    assert backend == "django.core.mail.backends.console.EmailBackend"
    assert queue == "beacon"
    assert anymail == {"IGNORE_RECIPIENT_STATUS": False, "REQUESTS_TIMEOUT": 7.0, "SENDGRID_API_KEY": "SG.x"}


def test_the_provider_choices_are_the_registered_kinds():
    for channel in CHANNEL_SETTINGS:
        registered = {kind for kind, cls in PROVIDER_CLASSES.items() if channel in cls.channels}
        assert settings.PROVIDER_CHOICES[channel] == registered


def test_the_brokers_visibility_timeout_is_the_sending_lease():
    result = load(
        {"REDIS_URL": "redis://127.0.0.1:6379/15", "BEACON_SENDING_LEASE_SECONDS": "300"},
        "s.CELERY_BROKER_TRANSPORT_OPTIONS",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"visibility_timeout": 300}
