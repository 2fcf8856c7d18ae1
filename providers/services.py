"""An account's provider records: written, validated, read back masked, re-encrypted
under a new key, and tested with one message.

Every check raises a Django ValidationError naming the field at fault (for credentials
and settings: the key) and never a credential's value. Nothing here logs a credential.
"""

from __future__ import annotations

import json
import logging
import math
import re
import uuid
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

from cryptography.fernet import InvalidToken
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction

from config.encryption import decrypt, encrypt, fernet

from .channels import CHANNELS, E164
from .kinds import KIND_FIELDS
from .models import DEFAULT_PRIORITY, MAX_PRIORITY, ProviderConfig
from .urlguard import UnsafeTarget, check_url

logger = logging.getLogger(__name__)

# The fields a record is written with (credentials and settings are mappings).
FIELDS = (
    "name",
    "channel",
    "kind",
    "priority",
    "enabled",
    "credentials",
    "settings",
    "rate_limit_per_second",
    "burst",
    "cost_per_message",
    "currency",
)
DEFAULTS = {
    "priority": DEFAULT_PRIORITY,
    "enabled": True,
    "settings": {},
    "rate_limit_per_second": None,
    "burst": None,
    "cost_per_message": None,
    "currency": "",
}
MAX_NAME = 100
MAX_RATE = 100_000.0
MAX_BURST = 1_000_000
MAX_CREDENTIAL_CHARS = 20_000
CURRENCY = re.compile(r"^[A-Z]{3}$")
PHONE_NUMBER = re.compile(E164)

# How a stored secret is read back: this, then at most the value's last 4 characters.
MASK = "••••"
SHOWN_CHARS = 4
# A value shorter than this is masked whole (its last 4 characters would be too much of it).
MIN_PARTLY_SHOWN = 12

TEST_SUBJECT = "Beacon test"
TEST_BODY = "Beacon test"


# --- Reading ----------------------------------------------------------------------------


def credentials_of(config: ProviderConfig) -> dict:
    """The record's credentials, decrypted. A value encrypted under a key that
    BEACON_ENCRYPTION_KEYS no longer lists is an ImproperlyConfigured."""
    if not config.credentials:
        return {}
    return json.loads(decrypt(config.credentials))


def mask(value) -> str:
    text = "" if value is None else str(value)
    if len(text) < MIN_PARTLY_SHOWN:
        return MASK
    return MASK + text[-SHOWN_CHARS:]


def credentials_masked(config: ProviderConfig) -> dict:
    """Each credential as "••••" and its last 4 characters (a short one: "••••" alone)."""
    return {name: mask(value) for name, value in credentials_of(config).items()}


def provider_configs_for(*, account, channel: str | None = None):
    """The account's records, in the order a channel's chain tries them."""
    configs = ProviderConfig.objects.filter(account=account)
    if channel is not None:
        configs = configs.filter(channel=channel)
    return configs.order_by("channel", "priority", "name", "pk")


# --- Validation -------------------------------------------------------------------------


def _error(errors: dict, field: str, message: str) -> None:
    errors.setdefault(field, []).append(message)


def _known_names(names, known, field: str, errors: dict, what: str) -> None:
    unknown = sorted(str(name) for name in names if name not in known)
    if unknown:
        allowed = ", ".join(known) if known else "none"
        _error(errors, field, f"Unknown {what} key(s): {', '.join(unknown)}. This kind takes: {allowed}.")


def _merge_credentials(stored: dict, given: Mapping | None, errors: dict) -> dict:
    """`given` over `stored`, key by key: a key given as "" or None is removed."""
    merged = dict(stored)
    if given is None:
        return merged
    if not isinstance(given, Mapping):
        _error(errors, "credentials", "Give an object of credential names and values.")
        return merged
    for name, value in given.items():
        if value is None or value == "":
            merged.pop(name, None)
        elif not isinstance(value, str):
            # The name only: the value may be a secret.
            _error(errors, "credentials", f"The value of {name} must be a string.")
        elif len(value) > MAX_CREDENTIAL_CHARS:
            _error(errors, "credentials", f"The value of {name} is longer than {MAX_CREDENTIAL_CHARS} characters.")
        else:
            merged[name] = value
    return merged


def _clean_settings(given, errors: dict) -> dict:
    if given is None:
        return {}
    if not isinstance(given, Mapping):
        _error(errors, "settings", "Give an object of setting names and values.")
        return {}
    cleaned = {}
    for name, value in given.items():
        if value is None or value == "":
            continue
        if isinstance(value, float) and not math.isfinite(value):
            _error(errors, "settings", f"The value of {name} must be a finite number.")
        elif not isinstance(value, str | int | float | bool):
            _error(errors, "settings", f"The value of {name} must be a string, a number or a boolean.")
        else:
            cleaned[str(name)] = value
    size = len(json.dumps(cleaned, separators=(",", ":")))
    if size > django_settings.BEACON_MAX_JSON_CHARS:
        _error(errors, "settings", f"At most {django_settings.BEACON_MAX_JSON_CHARS} characters as JSON.")
    return cleaned


def _check_settings(kind: str, values: dict, errors: dict) -> None:
    fields = KIND_FIELDS[kind]
    _known_names(values, fields.settings, "settings", errors, "setting")
    for name in fields.url_settings:
        if name not in values:
            continue
        url = values[name]
        if not isinstance(url, str):
            _error(errors, f"settings.{name}", "Give a URL.")
            continue
        try:
            check_url(url)
        except UnsafeTarget as exc:
            _error(errors, f"settings.{name}", exc.message)


def _check_numbers(state: dict, errors: dict) -> None:
    name = state["name"]
    if not isinstance(name, str) or not name.strip():
        _error(errors, "name", "This field may not be blank.")
    elif len(name) > MAX_NAME:
        _error(errors, "name", f"At most {MAX_NAME} characters.")
    priority = state["priority"]
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= MAX_PRIORITY:
        _error(errors, "priority", f"A whole number from 0 to {MAX_PRIORITY}.")
    if not isinstance(state["enabled"], bool):
        _error(errors, "enabled", "Must be true or false.")
    rate = state["rate_limit_per_second"]
    if rate is not None:
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate):
            _error(errors, "rate_limit_per_second", "Give a number.")
        elif not 0 < rate <= MAX_RATE:
            _error(errors, "rate_limit_per_second", f"Must be greater than 0 and at most {MAX_RATE:g}.")
    burst = state["burst"]
    if burst is not None and (isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= MAX_BURST):
        _error(errors, "burst", f"A whole number from 1 to {MAX_BURST}.")
    cost = state["cost_per_message"]
    if cost is not None:
        try:
            cost = Decimal(str(cost))
        except InvalidOperation:
            cost = None
            _error(errors, "cost_per_message", "Give a decimal number.")
        else:
            if not cost.is_finite() or cost < 0 or cost >= Decimal("1000000"):
                _error(errors, "cost_per_message", "A number from 0 to 999999.999999.")
            elif cost.as_tuple().exponent < -6:
                _error(errors, "cost_per_message", "At most 6 decimal places.")
            else:
                state["cost_per_message"] = cost
    currency = state["currency"] or ""
    if not isinstance(currency, str):
        _error(errors, "currency", "Give a 3-letter currency code.")
    elif (cost is not None or currency) and not CURRENCY.match(currency):
        _error(errors, "currency", "Give the cost's currency as 3 uppercase letters (ISO 4217), e.g. USD.")


def _validated(account, state: dict, stored_credentials: dict, given_credentials, *, instance=None):
    """The record's state once `given_credentials` are merged over the stored ones, checked
    as a whole; (state, credentials) or a ValidationError naming every field at fault."""
    errors: dict[str, list[str]] = {}
    _check_numbers(state, errors)
    channel, kind = state["channel"], state["kind"]
    spec = CHANNELS.get(channel) if isinstance(channel, str) else None
    if spec is None:
        _error(errors, "channel", f"Unknown channel. Known: {', '.join(CHANNELS)}.")
    if not isinstance(kind, str) or kind not in KIND_FIELDS:
        _error(errors, "kind", f"Unknown provider kind. Known: {', '.join(sorted(KIND_FIELDS))}.")
        kind = None
    elif spec is not None and kind not in spec.kinds:
        _error(errors, "kind", f"{kind} does not send {channel}. Kinds for {channel}: {', '.join(spec.kinds)}.")
        kind = None  # its credentials and settings are beside the point
    credentials = _merge_credentials(stored_credentials, given_credentials, errors)
    settings_values = _clean_settings(state["settings"], errors)
    if kind is not None:
        fields = KIND_FIELDS[kind]
        _known_names(credentials, fields.credentials, "credentials", errors, "credential")
        missing = [name for name in fields.required_credentials if name not in credentials]
        if missing:
            _error(errors, "credentials", f"{kind} needs: {', '.join(missing)}.")
        _check_settings(kind, settings_values, errors)
    state["settings"] = settings_values
    if isinstance(state["name"], str) and state["name"].strip():
        state["name"] = state["name"].strip()
        taken = ProviderConfig.objects.filter(account=account, name=state["name"])
        if instance is not None:
            taken = taken.exclude(pk=instance.pk)
        if taken.exists():
            _error(errors, "name", "The account already has a provider with this name.")
    if errors:
        raise ValidationError(errors)
    return state, credentials


def provider_config_check(account, *, instance: ProviderConfig | None = None, **fields) -> tuple[dict, dict]:
    """What a create (no instance) or an update would store, validated, without storing
    it: (the record's fields, its decrypted credentials). Raises a ValidationError."""
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise TypeError(f"Unknown provider record field(s): {', '.join(unknown)}")
    given_credentials = fields.pop("credentials", None)
    if instance is None:
        missing = [name for name in ("name", "channel", "kind") if fields.get(name) in (None, "")]
        if missing:
            raise ValidationError({name: ["This field is required."] for name in missing})
        state = {**DEFAULTS, **fields}
        stored = {}
    else:
        state = {name: getattr(instance, name) for name in FIELDS if name != "credentials"}
        state.update(fields)
        stored = credentials_of(instance)
        if state["kind"] != instance.kind:
            # Another kind: the previous kind's secrets and settings do not carry over.
            known = KIND_FIELDS.get(state["kind"])
            stored = {k: v for k, v in stored.items() if known is not None and k in known.credentials}
            if "settings" not in fields:
                state["settings"] = {
                    k: v for k, v in (state["settings"] or {}).items() if known is not None and k in known.settings
                }
    for name in ("priority", "enabled"):
        if state[name] is None:
            state[name] = DEFAULTS[name]
    if state["currency"] is None:
        state["currency"] = ""
    return _validated(account, state, stored, given_credentials, instance=instance)


def _encrypted(credentials: dict) -> str:
    return encrypt(json.dumps(credentials, sort_keys=True, separators=(",", ":")))


def _save(config: ProviderConfig, *, field: str = "name") -> ProviderConfig:
    try:
        with transaction.atomic():
            config.save()
    except IntegrityError:
        # Another request took the name between the check and the save.
        raise ValidationError({field: ["The account already has a provider with this name."]}) from None
    return config


# --- Writing ----------------------------------------------------------------------------


def provider_config_create(account, **fields) -> ProviderConfig:
    """A new record of the account's; `credentials` and `settings` by the names of
    KIND_FIELDS[kind], the kind's required credentials all given."""
    state, credentials = provider_config_check(account, **fields)
    config = ProviderConfig(account=account, credentials=_encrypted(credentials), **state)
    return _save(config)


def provider_config_update(config: ProviderConfig, **fields) -> ProviderConfig:
    """Change the fields given. Credentials given are merged key by key over the stored
    ones (a key given as "" or None is removed); settings given replace the stored ones."""
    with transaction.atomic():
        # Merged over the credentials as stored now, not as read earlier.
        current = ProviderConfig.objects.select_for_update().get(pk=config.pk)
        state, credentials = provider_config_check(current.account, instance=current, **fields)
        for name, value in state.items():
            setattr(config, name, value)
        config.credentials = _encrypted(credentials)
        return _save(config)


def provider_config_set_enabled(config: ProviderConfig, enabled: bool) -> ProviderConfig:
    config.enabled = bool(enabled)
    config.save(update_fields=["enabled", "updated_at"])
    return config


def provider_config_delete(config: ProviderConfig) -> None:
    config.delete()


# --- Keys -------------------------------------------------------------------------------


def provider_keys_rotate(*, dry_run: bool = False) -> int:
    """Re-encrypt every record's credentials under the first of BEACON_ENCRYPTION_KEYS
    (each read with whichever listed key encrypted it); how many records. All or nothing:
    a record no listed key reads is an ImproperlyConfigured and nothing is changed. With
    `dry_run`, every record is read (so that a missing key shows) and none written."""
    keys = fernet()
    count = 0
    with transaction.atomic():
        rows = ProviderConfig.objects.select_for_update().only("pk", "credentials").order_by("pk")
        batch: list[ProviderConfig] = []
        for config in rows.iterator(chunk_size=500):
            if not config.credentials:
                continue
            try:
                rotated = keys.rotate(config.credentials.encode()).decode()
            except InvalidToken:
                raise ImproperlyConfigured(
                    f"Provider record {config.pk}'s credentials were encrypted under a key "
                    "BEACON_ENCRYPTION_KEYS lacks; nothing was re-encrypted."
                ) from None
            count += 1
            if dry_run:
                continue
            config.credentials = rotated
            batch.append(config)
            if len(batch) >= 500:
                ProviderConfig.objects.bulk_update(batch, ["credentials"])
                batch = []
        if batch:
            ProviderConfig.objects.bulk_update(batch, ["credentials"])
    return count


def provider_keys_pending() -> int:
    """How many records' credentials the first key does not read (not yet rotated)."""
    first = fernet()._fernets[0]  # MultiFernet's first key: the one that encrypts
    pending = 0
    for token in ProviderConfig.objects.exclude(credentials="").values_list("credentials", flat=True).iterator():
        try:
            first.decrypt(token.encode())
        except InvalidToken:
            pending += 1
    return pending


# --- Sending ----------------------------------------------------------------------------


def provider_config_adapter(config: ProviderConfig):
    """The adapter of the record's kind built with its settings and credentials (cached
    per configuration by the registry)."""
    from .registry import provider_build

    return provider_build(config.kind, {**(config.settings or {}), **credentials_of(config)})


def test_address_problem(channel: str, to) -> str | None:
    """What is wrong with `to` as an address of the channel, or None."""
    if not isinstance(to, str) or not to.strip():
        return "Give the address to send the test to."
    if CHANNELS.get(channel) is not None and CHANNELS[channel].address_field == "phone":
        number = to.removeprefix("whatsapp:") if channel == "whatsapp" else to
        if not PHONE_NUMBER.match(number):
            return "Give a phone number in E.164 form, e.g. +14155550123."
    elif channel == "email":
        try:
            validate_email(to)
        except ValidationError:
            return "Give an email address."
    elif CHANNELS.get(channel) is not None and CHANNELS[channel].address_field.endswith("webhook_url"):
        try:
            check_url(to)
        except UnsafeTarget as exc:
            return exc.message
    return None


def _scrubbed(text: str, secrets: list[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, MASK)
    return text


def _error_kind(error) -> str:
    from .base import ProviderConfigurationError, ProviderUnavailable, RecipientRejected

    if isinstance(error, ProviderConfigurationError):
        return "Configuration error"
    if isinstance(error, RecipientRejected):
        return "Recipient rejected"
    if isinstance(error, ProviderUnavailable):
        return "Provider unavailable"
    return "Provider error"


def provider_config_test(config: ProviderConfig, to: str, body: str = TEST_BODY) -> dict:
    """Send one test message to `to` through exactly this record's adapter. A provider's
    refusal is an answer ({"ok": false, "error": ...}), not an exception; a `to` that is
    no address of the channel is a ValidationError on "to"."""
    from .base import OutboundMessage, ProviderError

    problem = test_address_problem(config.channel, to)
    if problem:
        raise ValidationError({"to": [problem]})
    secrets = [str(value) for value in credentials_of(config).values()]
    message = OutboundMessage(
        channel=config.channel,
        to=to.strip(),
        subject=TEST_SUBJECT,
        body=body or TEST_BODY,
        reference=str(uuid.uuid4()),
    )
    try:
        result = provider_config_adapter(config).send(message)
    except ProviderError as error:
        return {
            "ok": False,
            "provider_message_id": "",
            "error": _scrubbed(f"{_error_kind(error)}: {error.message}", secrets),
            "code": _scrubbed(str(error.code or ""), secrets),
            "retryable": bool(error.retryable),
        }
    except Exception as exc:  # noqa: BLE001 - a test answers; it never fails the request
        # The class only: an exception's text may quote a configuration value.
        logger.warning("provider test of record %s (%s) raised %s", config.pk, config.kind, exc.__class__.__name__)
        return {
            "ok": False,
            "provider_message_id": "",
            "error": f"Unexpected error: {exc.__class__.__name__}",
            "code": "",
            "retryable": False,
        }
    return {
        "ok": True,
        "provider_message_id": str(result.provider_message_id or ""),
        "error": "",
        "code": "",
        "retryable": False,
    }
