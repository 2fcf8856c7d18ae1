"""What each provider kind is configured with: its secrets (`credentials`, kept encrypted
and never shown back) and its other settings, as an account's provider records give them
and as the platform defaults in Django settings give them when no record does.

The adapters read their configuration through these names; the provider records' API
and admin validate against them. No Django here.
"""

from __future__ import annotations

from dataclasses import dataclass

# django-anymail's ESPs that Beacon offers as kinds of their own (kind -> anymail's name).
ANYMAIL_ESPS = {
    "sendgrid": "sendgrid",
    "mailgun": "mailgun",
    "postmark": "postmark",
    "amazon_ses": "amazon_ses",
    "brevo": "brevo",
    "mailjet": "mailjet",
    "mandrill": "mandrill",
    "resend": "resend",
    "sparkpost": "sparkpost",
}


@dataclass(frozen=True)
class KindFields:
    credentials: tuple[str, ...] = ()  # secrets: encrypted at rest, masked when read back
    required_credentials: tuple[str, ...] = ()
    settings: tuple[str, ...] = ()  # the rest: shown as given
    # Settings holding a URL Beacon connects to: they pass the outbound URL guard.
    url_settings: tuple[str, ...] = ("api_base_url",)

    @property
    def names(self) -> tuple[str, ...]:
        return (*self.credentials, *self.settings)


# How an anymail ESP kind's configuration reaches its backend: configuration name ->
# the backend's keyword argument (anymail's own name for the option, which it also reads
# from ANYMAIL["<ESP>_<ARGUMENT>"] when a record leaves it out). Postmark calls its key a
# server token; Amazon SES takes no key but boto3's session parameters (see
# AMAZON_SES_SESSION_PARAMS).
ANYMAIL_OPTIONS: dict[str, dict[str, str]] = {
    kind: {"api_key": "api_key", "api_url": "api_url"} for kind in ANYMAIL_ESPS if kind != "amazon_ses"
}
ANYMAIL_OPTIONS["postmark"] = {"api_key": "server_token", "api_url": "api_url"}
ANYMAIL_OPTIONS["mailjet"] = {**ANYMAIL_OPTIONS["mailjet"], "secret_key": "secret_key"}
ANYMAIL_OPTIONS["mailgun"] = {**ANYMAIL_OPTIONS["mailgun"], "sender_domain": "sender_domain"}
ANYMAIL_OPTIONS["amazon_ses"] = {}
# Amazon SES's configuration names -> boto3 Session arguments (anymail's session_params).
AMAZON_SES_SESSION_PARAMS = {
    "access_key_id": "aws_access_key_id",
    "secret_access_key": "aws_secret_access_key",
    "region": "region_name",
}


def _anymail_fields(kind: str) -> KindFields:
    if kind == "amazon_ses":
        return KindFields(
            credentials=("access_key_id", "secret_access_key"),
            required_credentials=("access_key_id", "secret_access_key"),
            settings=("region", "from_email"),
            url_settings=(),
        )
    options = ANYMAIL_OPTIONS[kind]
    credentials = tuple(name for name in ("api_key", "secret_key") if name in options)
    return KindFields(
        credentials=credentials,
        required_credentials=credentials,
        settings=(*(name for name in options if name not in credentials), "from_email"),
        url_settings=("api_url",),
    )


KIND_FIELDS: dict[str, KindFields] = {
    "console": KindFields(),
    "django": KindFields(),  # Django's EMAIL_BACKEND, configured in settings only
    "smtp": KindFields(
        credentials=("username", "password"),
        settings=("host", "port", "use_tls", "use_ssl", "from_email"),
        url_settings=(),
    ),
    **{kind: _anymail_fields(kind) for kind in ANYMAIL_ESPS},
    "twilio": KindFields(
        credentials=("account_sid", "auth_token"),
        required_credentials=("account_sid", "auth_token"),
        settings=("from_number", "messaging_service_sid", "whatsapp_from", "voice_from", "api_base_url"),
    ),
    "fcm": KindFields(
        credentials=("service_account_json",),
        required_credentials=("service_account_json",),
        settings=("project_id", "api_base_url"),
    ),
    "webpush": KindFields(
        credentials=("vapid_private_key",),
        required_credentials=("vapid_private_key",),
        settings=("vapid_subject", "ttl_seconds"),
        url_settings=(),
    ),
    "slack": KindFields(url_settings=()),
    "teams": KindFields(url_settings=()),
    "discord": KindFields(url_settings=()),
    "webhook": KindFields(url_settings=()),
    "inbox": KindFields(url_settings=()),
}
