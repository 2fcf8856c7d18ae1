import smtplib
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
    """

    kind = "django"
    channels = ("email",)

    def __init__(self, *, timeout: float):
        super().__init__(timeout=timeout)
        self._connection = None  # an ESP's, kept for the process
        self._smtp = None  # SMTP's, kept for one send_many

    def check_configuration(self) -> list[str]:
        try:
            get_connection()
        except Exception as exc:  # noqa: BLE001 - any import or settings error is a problem to report
            return [f"EMAIL_BACKEND cannot be loaded: {exc.__class__.__name__}"]
        return []

    def _uses_smtp(self) -> bool:
        return issubclass(import_string(settings.EMAIL_BACKEND), SmtpBackend)

    def _get_connection(self):
        if self._smtp is not None:
            return self._smtp
        if self._connection is None:
            if self._uses_smtp():
                return get_connection(fail_silently=False, timeout=self.timeout)
            # anymail's HTTP backends otherwise wait 30 s: keep every provider on one timeout.
            options = {} if "REQUESTS_TIMEOUT" in settings.ANYMAIL else {"requests_timeout": self.timeout}
            connection = get_connection(fail_silently=False, **options)
            connection.open()
            self._connection = connection
        return self._connection

    def send_many(self, messages):
        if len(messages) < 2 or not self._uses_smtp():
            yield from super().send_many(messages)
            return
        self._smtp = get_connection(fail_silently=False, timeout=self.timeout)
        try:
            yield from super().send_many(messages)
        finally:
            smtp, self._smtp = self._smtp, None
            smtp.close()

    def build_request(self, message: OutboundMessage) -> EmailMultiAlternatives:
        email = EmailMultiAlternatives(
            subject=message.subject,
            body=message.body,
            from_email=message.metadata.get("from_email") or settings.DEFAULT_FROM_EMAIL,
            to=[message.to],
        )
        if message.html_body:
            email.attach_alternative(message.html_body, "text/html")
        email.extra_headers.update(message.headers)
        message_id = make_msgid(domain=settings.DEFAULT_FROM_EMAIL.rsplit("@", 1)[-1].strip(">") or None)
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
