import smtplib
from collections.abc import Mapping
from email.utils import make_msgid

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.backends.smtp import EmailBackend as SmtpBackend
from django.utils.module_loading import import_string

from .base import (
    OutboundMessage,
    Provider,
    ProviderConfigurationError,
    ProviderError,
    ProviderUnavailable,
    RecipientRejected,
    SendResult,
    error_for_status,
    parse_retry_after,
)
from .kinds import AMAZON_SES_SESSION_PARAMS, ANYMAIL_ESPS, ANYMAIL_OPTIONS, KIND_FIELDS

try:
    from anymail.exceptions import (
        AnymailAPIError,
        AnymailConfigurationError,
        AnymailError,
        AnymailInvalidAddress,
        AnymailRecipientsRefused,
    )
except ImportError:  # pragma: no cover - anymail is in requirements.txt
    AnymailError = AnymailAPIError = AnymailConfigurationError = ()
    AnymailInvalidAddress = AnymailRecipientsRefused = ()

_REJECTED_STATUSES = {"rejected", "invalid", "failed"}


class DjangoEmailProvider(Provider):
    """Email through Django's configured EMAIL_BACKEND: SMTP or any django-anymail ESP.

    An ESP backend keeps its HTTP session open between sends. SMTP keeps one connection
    for the messages of one `send_many` (one flush of a dispatch batch) and closes it
    after: servers drop idle connections, and a resend on a dead socket could duplicate.

    The kinds below reuse this flow with a backend of their own, built from their
    configuration rather than from EMAIL_BACKEND.
    """

    kind = "django"
    channels = ("email",)

    def __init__(self, *, timeout: float, config: Mapping | None = None):
        super().__init__(timeout=timeout, config=config)
        self._connection = None  # an ESP's, kept for the process
        self._smtp = None  # SMTP's, kept for one send_many

    # --- the backend: what the kinds below change ------------------------------------

    def backend_path(self) -> str | None:
        """The email backend's dotted path; None for settings' EMAIL_BACKEND."""
        return None

    def backend_options(self) -> dict:
        """The backend's keyword arguments from this adapter's configuration."""
        return {}

    def _uses_smtp(self) -> bool:
        return issubclass(import_string(settings.EMAIL_BACKEND), SmtpBackend)

    def _new_connection(self, **options):
        return get_connection(self.backend_path(), fail_silently=False, **self.backend_options(), **options)

    def sender(self) -> str:
        """The From address when the message names none."""
        return self.config.get("from_email") or settings.DEFAULT_FROM_EMAIL

    # --- the flow --------------------------------------------------------------------

    def check_configuration(self) -> list[str]:
        try:
            get_connection()
        except Exception as exc:  # noqa: BLE001 - any import or settings error is a problem to report
            return [f"EMAIL_BACKEND cannot be loaded: {exc.__class__.__name__}"]
        return []

    def _get_connection(self):
        if self._smtp is not None:
            return self._smtp
        if self._connection is None:
            if self._uses_smtp():
                return self._new_connection(timeout=self.timeout)
            # anymail's HTTP backends otherwise wait 30 s: keep every provider on one timeout.
            options = {} if "REQUESTS_TIMEOUT" in settings.ANYMAIL else {"requests_timeout": self.timeout}
            connection = self._new_connection(**options)
            connection.open()
            self._connection = connection
        return self._connection

    def send_many(self, messages):
        if len(messages) < 2 or not self._uses_smtp():
            yield from super().send_many(messages)
            return
        try:
            self._smtp = self._new_connection(timeout=self.timeout)
        except ProviderError:
            yield from super().send_many(messages)  # each send reports the configuration's error
            return
        try:
            yield from super().send_many(messages)
        finally:
            smtp, self._smtp = self._smtp, None
            smtp.close()

    def build_request(self, message: OutboundMessage) -> EmailMultiAlternatives:
        sender = self.sender()
        email = EmailMultiAlternatives(
            subject=message.subject,
            body=message.body,
            from_email=message.metadata.get("from_email") or sender,
            to=[message.to],
        )
        if message.html_body:
            email.attach_alternative(message.html_body, "text/html")
        email.extra_headers.update(message.headers)
        message_id = make_msgid(domain=sender.rsplit("@", 1)[-1].strip(">") or None)
        email.extra_headers["Message-ID"] = message_id
        if message.reference:
            email.extra_headers["X-Beacon-Delivery"] = message.reference
        # django-anymail sends this to the ESP, which echoes it in tracking events.
        email.metadata = {k: v for k, v in message.metadata.items() if k != "from_email"}
        return email

    def post_request(self, email: EmailMultiAlternatives) -> EmailMultiAlternatives:
        connection = self._get_connection()
        try:
            sent = connection.send_messages([email])
        finally:
            if connection is not self._connection and connection is not self._smtp:
                connection.close()
        if not sent:
            raise ProviderUnavailable("The email backend accepted no message.")
        return email

    def parse_response(self, email: EmailMultiAlternatives, message: OutboundMessage) -> SendResult:
        status = getattr(email, "anymail_status", None)
        if status is not None and status.message_id:
            if status.status and status.status <= _REJECTED_STATUSES:
                raise RecipientRejected(f"The ESP refused the recipient ({', '.join(sorted(status.status))}).")
            return SendResult(provider_message_id=str(status.message_id))
        return SendResult(provider_message_id=email.extra_headers["Message-ID"])

    def classify_error(self, exc: Exception) -> ProviderError:
        return classify_email_error(exc)


def _flag(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


class SmtpEmailProvider(DjangoEmailProvider):
    """Email over SMTP with Django's SMTP backend, to the configuration's server (by
    default EMAIL_HOST, EMAIL_PORT, EMAIL_HOST_USER, ... whatever EMAIL_BACKEND says)."""

    kind = "smtp"
    setting_names = {
        "host": "EMAIL_HOST",
        "port": "EMAIL_PORT",
        "username": "EMAIL_HOST_USER",
        "password": "EMAIL_HOST_PASSWORD",
        "use_tls": "EMAIL_USE_TLS",
        "use_ssl": "EMAIL_USE_SSL",
    }

    def backend_path(self) -> str:
        return "django.core.mail.backends.smtp.EmailBackend"

    def backend_options(self) -> dict:
        config = self.config
        try:
            port = int(config["port"])
            if not 0 < port < 65536:
                raise ValueError
        except (TypeError, ValueError):
            raise ProviderConfigurationError(f"{self.label('port')} must be a port number.") from None
        use_tls, use_ssl = _flag(config["use_tls"]), _flag(config["use_ssl"])
        if use_tls and use_ssl:
            raise ProviderConfigurationError(
                f"{self.label('use_tls')} and {self.label('use_ssl')} are exclusive: set one."
            )
        if not config["host"]:
            raise ProviderConfigurationError(f"{self.label('host')} must be set.")
        return {
            "host": str(config["host"]),
            "port": port,
            "username": str(config["username"] or ""),
            "password": str(config["password"] or ""),
            "use_tls": use_tls,
            "use_ssl": use_ssl,
        }

    def _uses_smtp(self) -> bool:
        return True

    def check_configuration(self) -> list[str]:
        try:
            self._new_connection(timeout=self.timeout)  # connects only when opened
        except ProviderConfigurationError as exc:
            return [exc.message]
        return []


class AnymailEmailProvider(DjangoEmailProvider):
    """Email through one django-anymail ESP's backend (`esp`), with the configuration's
    API key and URL; what the configuration leaves out, anymail reads from its settings
    (ANYMAIL["<ESP>_API_KEY"], ...), as it would for EMAIL_BACKEND. One subclass per kind
    of ANYMAIL_ESPS."""

    esp = ""

    @classmethod
    def setting_prefix(cls) -> str:
        return cls.esp.upper()  # anymail's: "SENDGRID", "AMAZON_SES", ...

    @classmethod
    def settings_config(cls) -> dict:
        from anymail.utils import get_anymail_setting

        prefix = cls.setting_prefix()
        if cls.kind == "amazon_ses":
            params = get_anymail_setting("session_params", esp_name=prefix, kwargs={}, default={}) or {}
            return {name: params.get(param) for name, param in AMAZON_SES_SESSION_PARAMS.items()}
        return {
            name: get_anymail_setting(argument, esp_name=prefix, kwargs={}, default=None, allow_bare=True)
            for name, argument in ANYMAIL_OPTIONS[cls.kind].items()
        }

    def label(self, name: str) -> str:
        if self.overrides:
            return name
        if self.kind == "amazon_ses":
            return f"ANYMAIL_AMAZON_SES_SESSION_PARAMS[{AMAZON_SES_SESSION_PARAMS.get(name, name)!r}]"
        return f"ANYMAIL_{self.setting_prefix()}_{ANYMAIL_OPTIONS[self.kind].get(name, name).upper()}"

    def backend_path(self) -> str:
        return f"anymail.backends.{self.esp}.EmailBackend"

    def backend_options(self) -> dict:
        """Only what the configuration gives: anymail reads the rest from its settings,
        exactly as for EMAIL_BACKEND. Except the credentials, when they must be the
        configuration's own (`own_credentials`): then all of them are given."""
        if self.own_credentials:
            missing = [name for name in KIND_FIELDS[self.kind].credentials if name not in self.overrides]
            if missing:
                raise ProviderConfigurationError(f"{' and '.join(missing)} must be set")
        if self.kind == "amazon_ses":
            given = {
                param: self.overrides[name]
                for name, param in AMAZON_SES_SESSION_PARAMS.items()
                if name in self.overrides
            }
            if not given:
                return {}
            if self.own_credentials:  # the record's keys and region only: no profile of the platform's
                return {"session_params": given}
            from anymail.utils import get_anymail_setting

            defaults = get_anymail_setting("session_params", esp_name=self.setting_prefix(), kwargs={}, default={})
            return {"session_params": {**(defaults or {}), **given}}
        options = {}
        for name, argument in ANYMAIL_OPTIONS[self.kind].items():
            if name in self.overrides:
                options[argument] = self.configured_url(name) if name == "api_url" else self.overrides[name]
        return options

    def _uses_smtp(self) -> bool:
        return False

    def check_configuration(self) -> list[str]:
        try:
            self._new_connection()  # opens no session
        except ProviderConfigurationError as exc:
            return [exc.message]
        except Exception as exc:  # noqa: BLE001 - any import or settings error is a problem to report
            missing = [name for name in KIND_FIELDS[self.kind].required_credentials if not self.config.get(name)]
            if missing and AnymailConfigurationError and isinstance(exc, AnymailConfigurationError):
                return [f"{' and '.join(self.label(name) for name in missing)} must be set"]
            return [f"The {self.kind} email backend cannot be loaded: {exc.__class__.__name__}"]
        return []


def _anymail_provider(kind: str, esp: str) -> type[AnymailEmailProvider]:
    name = "".join(part.capitalize() for part in kind.split("_")) + "EmailProvider"
    return type(name, (AnymailEmailProvider,), {"kind": kind, "esp": esp, "__module__": __name__})


# One adapter class per anymail ESP kind: SendgridEmailProvider, MailgunEmailProvider, ...
ANYMAIL_PROVIDERS: dict[str, type[AnymailEmailProvider]] = {
    kind: _anymail_provider(kind, esp) for kind, esp in ANYMAIL_ESPS.items()
}
EMAIL_PROVIDERS: tuple[type[DjangoEmailProvider], ...] = (
    DjangoEmailProvider,
    SmtpEmailProvider,
    *ANYMAIL_PROVIDERS.values(),
)


def classify_email_error(exc: Exception) -> ProviderError:
    # Anymail first: its HTTP errors subclass requests.HTTPError, an OSError, and would
    # otherwise read as an unreachable SMTP server (a 400 retried, a 429's wait lost).
    if AnymailRecipientsRefused and isinstance(exc, (AnymailRecipientsRefused, AnymailInvalidAddress)):
        return RecipientRejected("The ESP refused the recipient.")
    if AnymailConfigurationError and isinstance(exc, AnymailConfigurationError):
        return ProviderConfigurationError("The ESP is not configured: check the ANYMAIL_* settings.")
    if AnymailAPIError and isinstance(exc, AnymailAPIError):
        if exc.status_code is None:
            return ProviderUnavailable("The ESP could not be reached.")
        response = getattr(exc, "response", None)
        retry_after = parse_retry_after(response.headers.get("Retry-After")) if response is not None else None
        return error_for_status(exc.status_code, f"The ESP answered HTTP {exc.status_code}.", retry_after=retry_after)
    if AnymailError and isinstance(exc, AnymailError):
        return ProviderError(f"The ESP refused the message: {exc.__class__.__name__}")
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return ProviderConfigurationError(f"SMTP authentication failed ({exc.smtp_code})", status_code=exc.smtp_code)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        if codes and all(400 <= code < 500 for code in codes):
            return ProviderUnavailable(f"SMTP recipient temporarily refused ({codes[0]})", status_code=codes[0])
        return RecipientRejected(
            f"SMTP recipient refused ({codes[0] if codes else '?'})", status_code=codes[0] if codes else None
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        if 400 <= exc.smtp_code < 500:
            return ProviderUnavailable(f"SMTP temporary failure ({exc.smtp_code})", status_code=exc.smtp_code)
        return RecipientRejected(f"SMTP permanent failure ({exc.smtp_code})", status_code=exc.smtp_code)
    if isinstance(exc, (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, OSError)):
        return ProviderUnavailable(f"SMTP server unreachable: {exc.__class__.__name__}")
    return ProviderError(f"Email send failed: {exc.__class__.__name__}")


# django-anymail's normalised tracking event types onto Beacon's delivery statuses.
# None: nothing to record (the ESP still has the message, or it concerns the recipient,
# not this delivery).
ANYMAIL_EVENT_MAP = {
    "queued": None,
    "deferred": None,
    "sent": "sent",
    "delivered": "delivered",
    "opened": "opened",
    "clicked": "clicked",
    "rejected": "failed",
    "failed": "failed",
    "bounced": "bounced",
    "autoresponded": None,
    "complained": None,
    "unsubscribed": None,
    "subscribed": None,
    "unknown": None,
}
