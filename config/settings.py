"""Beacon settings: one module, read from the environment.

Every variable has an embedded default that works on a fresh machine (SQLite and a
file-system broker). A bad value stops start-up with ImproperlyConfigured rather than
surprising a worker later. The README lists every variable.
"""

import os
import secrets
from pathlib import Path
from urllib.parse import urlparse

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from providers.channels import CHANNELS

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("BEACON_VAR_DIR", BASE_DIR / "var"))

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    """The variable's value; unset and empty are the same (compose passes `${X:-}`)."""
    return os.environ.get(name) or default


def env_choice(name: str, default: str, choices: set[str]) -> str:
    value = env_str(name, default)
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(sorted(choices))}; got {value!r}")
    return value


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


def env_url(name: str, default: str = "") -> str:
    value = env_str(name, default).rstrip("/")
    if value:
        parsed = urlparse(value)
        if parsed.scheme not in {"http", "https"} or not parsed.netloc:
            raise ImproperlyConfigured(f"{name} must be an http(s) URL, got {value!r}")
    return value


DEBUG = env_bool("DEBUG", False)


def _local_secret_key() -> str:
    """Without SECRET_KEY, a random key kept in var/secret_key (created once, mode 0600)."""
    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        temporary = VAR_DIR / f".secret_key.{os.getpid()}"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(50))
        try:
            os.link(temporary, path)  # atomic: concurrent first starts agree on one key
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    return path.read_text().strip()


SECRET_KEY = env_str("SECRET_KEY") or _local_secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

# The URL Beacon is reached at from outside. Provider callbacks are signed over it, so
# signatures still match behind a TLS-terminating proxy.
PUBLIC_BASE_URL = env_url("PUBLIC_BASE_URL", "http://127.0.0.1:8000")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "anymail",
    "accounts",
    "providers",
    "templates",
    "preferences",
    "notifications",
    "campaigns",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

VAR_DIR.mkdir(parents=True, exist_ok=True)
DATABASE_URL = env_str("DATABASE_URL")
try:
    DATABASES = {
        "default": dj_database_url.parse(
            DATABASE_URL or f"sqlite:///{VAR_DIR / 'beacon.sqlite3'}",
            conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0),
            conn_health_checks=True,
        )
    }
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is not a database URL: {exc}") from None
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default is shared by the API, the worker and beat: wait for locks.
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    # JSON with no NUL anywhere (PostgreSQL cannot store one); forms as DRF has them.
    "DEFAULT_PARSER_CLASSES": [
        "accounts.inputs.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "accounts.errors.exception_handler",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Beacon API",
    "DESCRIPTION": "Multi-channel notifications: templates, sends, delivery tracking.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "DeliveryStatusEnum": "notifications.models.DeliveryStatus",
        "ChannelEnum": "templates.models.Channel",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "accounts.schema.add_error_responses",
    ],
}

# --- Celery ---------------------------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
BROKER_DIR = VAR_DIR / "broker"
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS = {}  # visibility_timeout: set below, from the sending lease
else:
    # A broker that needs no server: messages are files under var/broker.
    BROKER_DIR.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR),
        "data_folder_out": str(BROKER_DIR),
        # Broadcasts (the /health/ ping) keep their files here too, not in the working directory.
        "control_folder": str(BROKER_DIR / "control"),
        "polling_interval": 0.2,
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# A worker killed mid-task leaves its message unacknowledged, so it runs again; the
# delivery claim (queued -> sending) keeps the second run from sending twice.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = env_int("CELERY_WORKER_PREFETCH_MULTIPLIER", 4, minimum=1)
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_DEFAULT_QUEUE = env_str("BEACON_QUEUE", "beacon")
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"

BEACON_SWEEP_INTERVAL_SECONDS = env_float("BEACON_SWEEP_INTERVAL_SECONDS", 10.0, minimum=1.0)
# The periodic tasks live in the database (django-celery-beat), registered after each
# migrate from notifications/periodic.py and editable in the admin from then on.
BEACON_SCHEDULE_INTERVAL_SECONDS = env_float("BEACON_SCHEDULE_INTERVAL_SECONDS", 15.0, minimum=1.0)
# Schedule rows one due-scan batch claims, and how long a claimed row may stay in
# processing before the scan takes it for a dead worker's and puts it back.
BEACON_SCHEDULE_BATCH_SIZE = env_int("BEACON_SCHEDULE_BATCH_SIZE", 500, minimum=1)
BEACON_SCHEDULE_LEASE_SECONDS = env_int("BEACON_SCHEDULE_LEASE_SECONDS", 300, minimum=1)

# --- Sending --------------------------------------------------------------------------
BEACON_MAX_ATTEMPTS = env_int("BEACON_MAX_ATTEMPTS", 4, minimum=1)
BEACON_RETRY_BASE_SECONDS = env_float("BEACON_RETRY_BASE_SECONDS", 5.0)
BEACON_RETRY_MAX_SECONDS = env_float("BEACON_RETRY_MAX_SECONDS", 900.0)
# A delivery left in "sending" this long belonged to a worker that died mid-send.
BEACON_SENDING_LEASE_SECONDS = env_int("BEACON_SENDING_LEASE_SECONDS", 600, minimum=1)
if REDIS_URL:
    # Tasks are acknowledged when they end (acks_late). A worker killed whole leaves the
    # messages it had reserved in Redis's unacked set until this timeout, and then Redis
    # delivers them again. Redelivery is harmless: a message whose deliveries are no
    # longer queued at its attempt count claims nothing. Those still queued (reserved but
    # never started) are sent. So the timeout only decides how soon they come back, and
    # the sending lease, when the sweep settles the dead worker's claimed deliveries, is
    # the time that fits. A task that runs longer than this, such as a batch held up by a
    # very slow provider, gets a duplicate message, which claims nothing. Countdowns are
    # shorter than a sweep interval, well inside it.
    CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] = BEACON_SENDING_LEASE_SECONDS
# A queued delivery still waiting this long after it was due lost its task message.
BEACON_REQUEUE_GRACE_SECONDS = env_int("BEACON_REQUEUE_GRACE_SECONDS", 120, minimum=1)
BEACON_SWEEP_BATCH_SIZE = env_int("BEACON_SWEEP_BATCH_SIZE", 500, minimum=1)
BEACON_MAX_BODY_CHARS = env_int("BEACON_MAX_BODY_CHARS", 100_000, minimum=1)
# Largest JSON object a request may carry in one field (context, sample_context, defaults).
BEACON_MAX_JSON_CHARS = env_int("BEACON_MAX_JSON_CHARS", 65_536, minimum=2)
# Deliveries one dispatch task claims together, and how many of those it hands to the
# provider between two writes of their outcomes: a worker killed mid-batch leaves at most
# that many deliveries whose fate is unknown (held as worker_lost); the rest are resent.
BEACON_DISPATCH_BATCH_SIZE = env_int("BEACON_DISPATCH_BATCH_SIZE", 100, minimum=1)
BEACON_DISPATCH_FLUSH_SIZE = env_int("BEACON_DISPATCH_FLUSH_SIZE", 20, minimum=1)
# Campaigns: audience members one fan-out page turns into notifications (one transaction),
# how long one fan-out task runs before it hands over to the next, and how often the
# watch starts due campaigns and picks up a fan-out whose worker died (one silent for
# BEACON_CAMPAIGN_STALL_SECONDS).
BEACON_CAMPAIGN_PAGE_SIZE = env_int("BEACON_CAMPAIGN_PAGE_SIZE", 1000, minimum=1)
BEACON_CAMPAIGN_SLICE_SECONDS = env_float("BEACON_CAMPAIGN_SLICE_SECONDS", 20.0, minimum=0.0)
BEACON_CAMPAIGN_WATCH_SECONDS = env_int("BEACON_CAMPAIGN_WATCH_SECONDS", 15, minimum=1)
BEACON_CAMPAIGN_STALL_SECONDS = env_int("BEACON_CAMPAIGN_STALL_SECONDS", 60, minimum=1)
# How long /health/ waits for a Celery worker to answer its ping.
BEACON_HEALTH_PING_SECONDS = env_float("BEACON_HEALTH_PING_SECONDS", 1.0, minimum=0.1)
# How long a process remembers a valid API token (0: look it up on every request).
BEACON_TOKEN_CACHE_SECONDS = env_float("BEACON_TOKEN_CACHE_SECONDS", 10.0)
# How long a process remembers what a template name resolved to (0: look it up each send).
BEACON_TEMPLATE_CACHE_SECONDS = env_float("BEACON_TEMPLATE_CACHE_SECONDS", 5.0)
# Recipients in one POST send/batch/.
BEACON_BATCH_MAX_RECIPIENTS = env_int("BEACON_BATCH_MAX_RECIPIENTS", 1000, minimum=1)
# Upkeep: notifications (with their deliveries, attempts and events), finished schedules
# and booking events older than this many days are deleted, this many ids per DELETE.
BEACON_LOG_RETENTION_DAYS = env_int("BEACON_LOG_RETENTION_DAYS", 90, minimum=1)
BEACON_CLEANUP_BATCH_SIZE = env_int("BEACON_CLEANUP_BATCH_SIZE", 1000, minimum=1)
# The failure watch: over the last this many minutes, an account's channel with at least
# this many finished deliveries and at least this share of them failed is an alert.
BEACON_FAILURE_WATCH_MINUTES = env_int("BEACON_FAILURE_WATCH_MINUTES", 60, minimum=1)
BEACON_FAILURE_WATCH_MIN_VOLUME = env_int("BEACON_FAILURE_WATCH_MIN_VOLUME", 20, minimum=1)
BEACON_FAILURE_RATE_THRESHOLD = env_float("BEACON_FAILURE_RATE_THRESHOLD", 0.25)
if BEACON_FAILURE_RATE_THRESHOLD > 1:
    raise ImproperlyConfigured(
        f"BEACON_FAILURE_RATE_THRESHOLD is a share between 0 and 1, got {BEACON_FAILURE_RATE_THRESHOLD}"
    )
# Fernet keys for secrets at rest (comma-separated, the first encrypts); empty: one derived
# from SECRET_KEY.
BEACON_ENCRYPTION_KEYS = [key.strip() for key in env_str("BEACON_ENCRYPTION_KEYS").split(",") if key.strip()]
# Outbound webhooks: how long a receiver has to answer, how often the due scan runs, how
# long a rotated-out secret still signs, and how long an endpoint may fail before it is
# disabled.
BEACON_WEBHOOK_TIMEOUT_SECONDS = env_float("BEACON_WEBHOOK_TIMEOUT_SECONDS", 15.0, minimum=0.1)
BEACON_WEBHOOK_INTERVAL_SECONDS = env_int("BEACON_WEBHOOK_INTERVAL_SECONDS", 5, minimum=1)
BEACON_WEBHOOK_BATCH_SIZE = env_int("BEACON_WEBHOOK_BATCH_SIZE", 100, minimum=1)
BEACON_WEBHOOK_SECRET_OVERLAP_HOURS = env_int("BEACON_WEBHOOK_SECRET_OVERLAP_HOURS", 24, minimum=0)
BEACON_WEBHOOK_DISABLE_AFTER_DAYS = env_int("BEACON_WEBHOOK_DISABLE_AFTER_DAYS", 5, minimum=1)
# Inbox streams: how long a stream token is good for, and how long one stream lasts
# before the client reconnects (with Last-Event-ID).
BEACON_STREAM_TOKEN_SECONDS = env_int("BEACON_STREAM_TOKEN_SECONDS", 3600, minimum=1)
BEACON_STREAM_MAX_SECONDS = env_float("BEACON_STREAM_MAX_SECONDS", 300.0, minimum=1)
BEACON_STREAM_HEARTBEAT_SECONDS = env_float("BEACON_STREAM_HEARTBEAT_SECONDS", 15.0, minimum=1)
PROVIDER_TIMEOUT_SECONDS = env_float("PROVIDER_TIMEOUT_SECONDS", 10.0, minimum=0.1)
# Circuit breakers (per provider, shared by every worker through Redis): consecutive
# provider failures that open one, how long it stays open before one probe is let
# through, and how long a probe may take before another is allowed.
BEACON_BREAKER_THRESHOLD = env_int("BEACON_BREAKER_THRESHOLD", 5, minimum=1)
BEACON_BREAKER_COOLDOWN_SECONDS = env_float("BEACON_BREAKER_COOLDOWN_SECONDS", 30.0, minimum=0.1)
BEACON_BREAKER_PROBE_SECONDS = env_float("BEACON_BREAKER_PROBE_SECONDS", 2 * PROVIDER_TIMEOUT_SECONDS + 5, minimum=0.1)
# A provider's health is read over this window; under this success rate it is degraded.
BEACON_HEALTH_WINDOW_SECONDS = env_int("BEACON_HEALTH_WINDOW_SECONDS", 300, minimum=60)
BEACON_HEALTH_DEGRADED_BELOW = env_float("BEACON_HEALTH_DEGRADED_BELOW", 0.9, minimum=0.0)
# Rate limits, as token buckets shared by every worker (a rate of 0 is no limit): the
# platform's providers ("twilio=100:20,fcm=500": kind=per second[:burst]; an account's
# provider records carry their own), every account, and every recipient address. A
# batch waits up to BEACON_RATE_LIMIT_MAX_WAIT_SECONDS for its tokens; a longer wait goes
# back to the queue.
BEACON_PROVIDER_RATE_LIMITS = env_str("BEACON_PROVIDER_RATE_LIMITS")
BEACON_ACCOUNT_RATE_LIMIT_PER_SECOND = env_float("BEACON_ACCOUNT_RATE_LIMIT_PER_SECOND", 0.0, minimum=0.0)
BEACON_ACCOUNT_RATE_LIMIT_BURST = env_int("BEACON_ACCOUNT_RATE_LIMIT_BURST", 0, minimum=0)
BEACON_RECIPIENT_RATE_LIMIT_PER_SECOND = env_float("BEACON_RECIPIENT_RATE_LIMIT_PER_SECOND", 0.0, minimum=0.0)
BEACON_RECIPIENT_RATE_LIMIT_BURST = env_int("BEACON_RECIPIENT_RATE_LIMIT_BURST", 0, minimum=0)
BEACON_RATE_LIMIT_MAX_WAIT_SECONDS = env_float("BEACON_RATE_LIMIT_MAX_WAIT_SECONDS", 5.0, minimum=0.0)
# A provider's limit is paced this share below (its clock counts arrivals, ours departures).
BEACON_RATE_LIMIT_HEADROOM = env_float("BEACON_RATE_LIMIT_HEADROOM", 0.03, minimum=0.0)
# How long a provider that answers 429 without Retry-After is left alone.
BEACON_THROTTLE_PAUSE_SECONDS = env_float("BEACON_THROTTLE_PAUSE_SECONDS", 5.0, minimum=0.0)
# Outbound URLs (chat webhooks) must reach a public address; true lets them reach loopback
# and private networks too, for local development and tests.
BEACON_ALLOW_PRIVATE_TARGETS = env_bool("BEACON_ALLOW_PRIVATE_TARGETS", False)

# One provider kind per channel; see providers/registry.py for the kinds.
TWILIO_ACCOUNT_SID = env_str("TWILIO_ACCOUNT_SID")
TWILIO_AUTH_TOKEN = env_str("TWILIO_AUTH_TOKEN")
TWILIO_FROM_NUMBER = env_str("TWILIO_FROM_NUMBER")
TWILIO_MESSAGING_SERVICE_SID = env_str("TWILIO_MESSAGING_SERVICE_SID")
# WhatsApp's sender ("whatsapp:+14155238886"; the prefix is added when missing), else the
# messaging service; voice calls come from TWILIO_VOICE_FROM, else TWILIO_FROM_NUMBER.
TWILIO_WHATSAPP_FROM = env_str("TWILIO_WHATSAPP_FROM")
TWILIO_VOICE_FROM = env_str("TWILIO_VOICE_FROM")
TWILIO_API_BASE_URL = env_url("TWILIO_API_BASE_URL")
# Push. FCM HTTP v1 with a service account: its JSON inline, or the path of its file;
# FCM_PROJECT_ID overrides the account's project; FCM_API_BASE_URL points at FCM (or a double).
FCM_SERVICE_ACCOUNT_JSON = env_str("FCM_SERVICE_ACCOUNT_JSON")
FCM_SERVICE_ACCOUNT_FILE = env_str("FCM_SERVICE_ACCOUNT_FILE")
FCM_PROJECT_ID = env_str("FCM_PROJECT_ID")
FCM_API_BASE_URL = env_url("FCM_API_BASE_URL", "https://fcm.googleapis.com")
# Web Push: the VAPID private key (PEM, or base64url DER or raw) and its contact subject;
# how long a push service keeps a message for an offline browser.
VAPID_PRIVATE_KEY = env_str("VAPID_PRIVATE_KEY")
VAPID_SUBJECT = env_str("VAPID_SUBJECT", "mailto:notifications@localhost")
WEBPUSH_TTL_SECONDS = env_int("WEBPUSH_TTL_SECONDS", 86400, minimum=0)
# One provider kind per channel, from the channel spec: BEACON_<CHANNEL>_PROVIDER for each
# channel in providers/channels.py (a test holds the kinds to providers/registry.py).
PROVIDER_CHOICES = {name: set(spec.kinds) for name, spec in CHANNELS.items()}
for _spec in CHANNELS.values():
    globals()[_spec.setting] = env_choice(_spec.setting, _spec.default_kind(os.environ), PROVIDER_CHOICES[_spec.name])

EMAIL_HOST = env_str("EMAIL_HOST")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL are exclusive: set one")
EMAIL_TIMEOUT = env_float("EMAIL_TIMEOUT", PROVIDER_TIMEOUT_SECONDS, minimum=0.1)
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend" if EMAIL_HOST else "django.core.mail.backends.console.EmailBackend",
)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Beacon <notifications@localhost>")
if not EMAIL_HOST:
    EMAIL_HOST = "localhost"


# django-anymail: every ANYMAIL_<NAME> variable becomes ANYMAIL["<NAME>"], e.g.
# ANYMAIL_SENDGRID_API_KEY, ANYMAIL_SENDGRID_API_URL, ANYMAIL_WEBHOOK_SECRET. Values that
# spell a boolean or a number become one (anymail wants IGNORE_* as bools, timeouts as numbers).
def _anymail_value(name: str, raw: str):
    lowered = raw.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if name.endswith("TIMEOUT"):
        try:
            return float(raw)
        except ValueError:
            raise ImproperlyConfigured(f"ANYMAIL_{name} must be a number of seconds, got {raw!r}") from None
    return raw


ANYMAIL = {
    key.removeprefix("ANYMAIL_"): _anymail_value(key.removeprefix("ANYMAIL_"), value)
    for key, value in os.environ.items()
    if key.startswith("ANYMAIL_") and value
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # The twilio client logs request headers at INFO; they carry credentials.
    "loggers": {"twilio": {"level": "WARNING"}},
}
