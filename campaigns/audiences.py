"""Audiences: who a campaign goes to.

A **list** audience is filled from CSV uploads: each row names a recipient (by phone,
email or external id; found or created in bulk as a send would) and its other columns
become the member's attributes. A **filter** audience is a set of conditions over the
account's recipients, previewed with `audience_count` and written into members with
`audience_freeze` when a campaign starts, so that fan-out always walks member rows in id
order.

Filter keys (all optional; every condition given must hold):
- `tags`: a list of strings; the recipient has every one of them.
- `locale`: the recipient's locale is this one or a regional variant of it, whatever the
  case ("es" matches "es", "es-MX" and "es_AR").
- `timezone`: the recipient's IANA time zone, exactly.
- `attributes`: an object; each key's value in the recipient's attributes equals the one
  given (strings, numbers and booleans; "1" is not 1).
- `last_booking_after` / `last_booking_before`: ISO dates (YYYY-MM-DD), in the project's
  time zone (UTC). The recipient's latest booking (any status, by start time) started on
  or after the `after` date, and before the `before` date (that day excluded). A
  recipient who never booked matches neither.
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import json
import math
import re
import zoneinfo
from dataclasses import dataclass, field
from datetime import date, datetime, time

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, connection, models, transaction
from django.db.models import Exists, F, Func, OuterRef, Q, Subquery, Value
from django.db.models.deletion import ProtectedError
from django.db.models.fields.json import KeyTransform
from django.utils import timezone

from accounts.inputs import nul_path
from notifications.bulk import rows_update
from notifications.models import Booking, Recipient
from notifications.serializers import LOCALE
from notifications.services.accept import recipients_resolve
from providers.channels import E164

from .models import Audience, AudienceKind, AudienceMember, Campaign, CampaignStatus

NAME_MAX_CHARS = 200
FILTER_KEYS = ("tags", "locale", "timezone", "attributes", "last_booking_after", "last_booking_before")
FILTER_MAX_TAGS = 50
FILTER_MAX_ATTRIBUTES = 50
FILTER_MAX_CHARS = 200  # a tag, an attribute key or a string value
# A campaign running or paused walks its audience's members by id: a freeze for another
# campaign must not remove rows from under it.
WALKING_STATUSES = (CampaignStatus.RUNNING, CampaignStatus.PAUSED)

# The upload: read and written this many rows at a time (one recipients_resolve and one
# member INSERT per chunk).
IMPORT_CHUNK_ROWS = 1000
# Only the first rejected rows are reported (with the total count).
REJECTED_REPORTED = 1000
# A physical line longer than this is refused rather than read into memory whole.
MAX_LINE_CHARS = 65_536
ADDRESS_COLUMNS = ("phone", "email", "external_id")
KNOWN_COLUMNS = (*ADDRESS_COLUMNS, "name", "locale", "timezone")
# The most a known column may hold (as the Recipient columns allow).
COLUMN_MAX_CHARS = {"phone": 16, "email": 254, "external_id": 200, "name": 200, "locale": 16, "timezone": 64}
# What a phone number is often written with, besides its digits.
PHONE_PUNCTUATION = re.compile(r"[\s\-.()\u00a0]")
SCAN_BLOCK_BYTES = 65_536


class AudienceConflict(ValidationError):
    """Refused because of the audience's state (used by a campaign; a filter audience
    takes no upload), not because of the input: the API answers 409."""


# --- Create, change, delete ------------------------------------------------------------


def audience_create(account, *, name: str, kind: str = AudienceKind.LIST, filter: dict | None = None) -> Audience:
    """A new audience; its name is unique within the account. A filter audience's filter
    is validated and stored normalised; a list audience has none."""
    name, filter = audience_check(account, name=name, kind=kind, filter=filter)
    try:
        with transaction.atomic():
            return Audience.objects.create(account=account, name=name, kind=kind, filter=filter)
    except IntegrityError:
        raise _name_taken() from None


def audience_check(
    account, *, name: str, kind: str, filter: dict | None, instance: Audience | None = None
) -> tuple[str, dict]:
    """The name and filter an audience would be saved with (stripped, normalised), or a
    ValidationError by field: what audience_create and the admin's form check."""
    name = _name_clean(name)
    if kind not in AudienceKind.values:
        raise ValidationError({"kind": [f"Must be one of: {', '.join(AudienceKind.values)}."]})
    if kind == AudienceKind.FILTER:
        filter = audience_filter_clean(filter or {})
    elif filter:
        raise ValidationError({"filter": ["A list audience has no filter: its members come from uploads."]})
    _name_free(account, name, instance=instance)
    return name, filter or {}


def audience_update(audience: Audience, *, name: str | None = None, filter: dict | None = None) -> Audience:
    """Rename the audience and/or replace a filter audience's filter. A filter change
    reaches members at the next freeze."""
    fields = []
    if name is not None:
        name = _name_clean(name)
        if name != audience.name:
            _name_free(audience.account, name, instance=audience)
            audience.name = name
            fields.append("name")
    if filter is not None:
        if audience.kind != AudienceKind.FILTER:
            if filter:
                raise ValidationError({"filter": ["A list audience has no filter: its members come from uploads."]})
        else:
            audience.filter = audience_filter_clean(filter)
            fields.append("filter")
    if fields:
        try:
            with transaction.atomic():
                audience.save(update_fields=[*fields, "updated_at"])
        except IntegrityError:
            raise _name_taken() from None
    return audience


def audience_delete(audience: Audience) -> None:
    """Delete the audience and its members; refused while a campaign uses it."""
    if audience.campaigns.exists():
        raise _in_use(audience)
    try:
        audience.delete()
    except ProtectedError:
        raise _in_use(audience) from None


def _in_use(audience: Audience) -> AudienceConflict:
    names = list(audience.campaigns.order_by("pk").values_list("name", flat=True)[:5])
    return AudienceConflict(
        {"audience": [f"Used by campaign(s) {', '.join(repr(n) for n in names)}: delete them first."]}
    )


def _name_clean(name) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValidationError({"name": ["A name is required."]})
    name = name.strip()
    if len(name) > NAME_MAX_CHARS:
        raise ValidationError({"name": [f"At most {NAME_MAX_CHARS} characters."]})
    if "\x00" in name:
        raise ValidationError({"name": ["NUL characters (\\u0000) are not allowed."]})
    return name


def _name_free(account, name: str, instance: Audience | None = None) -> None:
    taken = Audience.objects.filter(account=account, name=name)
    if instance is not None:
        taken = taken.exclude(pk=instance.pk)
    if taken.exists():
        raise _name_taken()


def _name_taken() -> ValidationError:
    return ValidationError({"name": ["The account already has an audience with this name."]})


# --- The filter ------------------------------------------------------------------------


def audience_filter_clean(value) -> dict:
    """The filter normalised (tags deduplicated, dates as YYYY-MM-DD), or a ValidationError
    naming each bad key as filter.<key>."""
    if not isinstance(value, dict):
        raise ValidationError({"filter": ["Must be an object."]})
    unknown = sorted(str(key) for key in value if key not in FILTER_KEYS)
    if unknown:
        raise ValidationError({"filter": [f"Unknown key(s): {', '.join(unknown)}. Known: {', '.join(FILTER_KEYS)}."]})
    where = nul_path(value)
    if where is not None:
        raise ValidationError({f"filter.{where}" if where else "filter": ["NUL characters (\\u0000) are not allowed."]})
    errors: dict[str, list[str]] = {}
    clean: dict = {}
    for key in FILTER_KEYS:
        if key not in value:
            continue
        try:
            clean[key] = _FILTER_CLEANERS[key](value[key])
        except ValueError as exc:
            errors[f"filter.{key}"] = [str(exc)]
    if errors:
        raise ValidationError(errors)
    after, before = clean.get("last_booking_after"), clean.get("last_booking_before")
    if after and before and after >= before:
        raise ValidationError({"filter.last_booking_before": ["Must be later than last_booking_after."]})
    return clean


def _tags_clean(value) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise ValueError("Must be a list of strings.")
    tags = list(dict.fromkeys(tag.strip() for tag in value))
    if any(not tag or len(tag) > FILTER_MAX_CHARS for tag in tags):
        raise ValueError(f"Each tag must be 1 to {FILTER_MAX_CHARS} characters.")
    if len(tags) > FILTER_MAX_TAGS:
        raise ValueError(f"At most {FILTER_MAX_TAGS} tags.")
    return tags


def _locale_clean(value) -> str:
    if not isinstance(value, str) or not re.fullmatch(LOCALE, value) or len(value) > COLUMN_MAX_CHARS["locale"]:
        raise ValueError('A locale such as "es" or "es-MX".')
    return value


def _timezone_clean(value) -> str:
    if not isinstance(value, str) or value not in _time_zones():
        raise ValueError("An IANA time zone such as Europe/Madrid.")
    return value


def _attributes_clean(value) -> dict:
    if not isinstance(value, dict):
        raise ValueError("Must be an object of attribute name to value.")
    if len(value) > FILTER_MAX_ATTRIBUTES:
        raise ValueError(f"At most {FILTER_MAX_ATTRIBUTES} attributes.")
    for key, item in value.items():
        if not key or len(key) > FILTER_MAX_CHARS:
            raise ValueError(f"Each attribute name must be 1 to {FILTER_MAX_CHARS} characters.")
        if isinstance(item, str):
            if len(item) > FILTER_MAX_CHARS:
                raise ValueError(f"{key}: at most {FILTER_MAX_CHARS} characters.")
        elif isinstance(item, bool):
            pass
        elif isinstance(item, int):
            if abs(item) >= 2**53:
                raise ValueError(f"{key}: a number between -2^53 and 2^53.")
        elif isinstance(item, float):
            if not math.isfinite(item) or abs(item) >= 2**53:
                raise ValueError(f"{key}: a number between -2^53 and 2^53.")
        else:
            raise ValueError(f"{key}: a string, a number or a boolean.")
    return dict(value)


def _date_clean(value) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError("An ISO date, YYYY-MM-DD.")
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise ValueError("An ISO date, YYYY-MM-DD.") from None


_FILTER_CLEANERS = {
    "tags": _tags_clean,
    "locale": _locale_clean,
    "timezone": _timezone_clean,
    "attributes": _attributes_clean,
    "last_booking_after": _date_clean,
    "last_booking_before": _date_clean,
}


@functools.cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


class _JSONArrayHolds(Func):
    """SQLite's stand-in for PostgreSQL's `jsonb @> '["tag"]'`: the JSON array column
    holds this string."""

    output_field = models.BooleanField()

    def __init__(self, column: str, item: str):
        super().__init__(F(column), Value(item))

    def as_sql(self, compiler, connection, **extra_context):
        array_sql, array_params = compiler.compile(self.source_expressions[0])
        item_sql, item_params = compiler.compile(self.source_expressions[1])
        sql = f"EXISTS (SELECT 1 FROM json_each({array_sql}) AS tag WHERE tag.type = 'text' AND tag.value = {item_sql})"
        return sql, (*array_params, *item_params)


def recipients_matching(*, account, filter: dict) -> models.QuerySet[Recipient]:
    """The account's recipients that meet every condition of the (clean) filter."""
    recipients = Recipient.objects.filter(account=account)
    postgres = connection.vendor == "postgresql"
    tags = filter.get("tags") or []
    if tags:
        if postgres:
            recipients = recipients.filter(tags__contains=tags)
        else:
            for tag in tags:
                recipients = recipients.filter(_JSONArrayHolds("tags", tag))
    if filter.get("locale"):
        locale = filter["locale"]
        recipients = recipients.filter(
            Q(locale__iexact=locale) | Q(locale__istartswith=f"{locale}-") | Q(locale__istartswith=f"{locale}_")
        )
    if filter.get("timezone"):
        recipients = recipients.filter(timezone=filter["timezone"])
    attributes = filter.get("attributes") or {}
    if attributes:
        if postgres:
            # jsonb containment; with scalar values it is equality of each key.
            recipients = recipients.filter(attributes__contains=attributes)
        else:
            for index, (key, value) in enumerate(attributes.items()):
                alias = f"_attribute_{index}"
                recipients = recipients.alias(**{alias: KeyTransform(key, "attributes")}).filter(**{alias: value})
    after, before = filter.get("last_booking_after"), filter.get("last_booking_before")
    if after or before:
        latest = Booking.objects.filter(invitee=OuterRef("pk")).order_by("-start_time").values("start_time")[:1]
        recipients = recipients.alias(last_booking_at=Subquery(latest))
        if after:
            recipients = recipients.filter(last_booking_at__gte=_day_start(after))
        if before:
            recipients = recipients.filter(last_booking_at__lt=_day_start(before))
    return recipients


def _day_start(iso_date: str) -> datetime:
    return datetime.combine(date.fromisoformat(iso_date), time.min, tzinfo=timezone.get_default_timezone())


# --- Reads -----------------------------------------------------------------------------


def audience_recipients(audience: Audience) -> models.QuerySet:
    """The ids of the account's recipients in the audience: a Recipient queryset as a flat
    values_list, by id, so that `pk` is the recipient's id whatever the kind (keyset pages:
    `.filter(pk__gt=last)[:n]`). A list audience's members, or the recipients a filter
    audience's filter matches now."""
    if audience.kind == AudienceKind.FILTER:
        recipients = recipients_matching(account=audience.account_id, filter=audience.filter)
    else:
        members = AudienceMember.objects.filter(audience=audience, recipient_id=OuterRef("pk"))
        recipients = Recipient.objects.filter(Exists(members), account=audience.account_id)
    return recipients.order_by("pk").values_list("pk", flat=True)


def audience_count(audience: Audience) -> int:
    """The campaign preview: how many recipients the audience holds now (a filter
    audience's current matches, which its next freeze will write)."""
    if audience.kind == AudienceKind.FILTER:
        return recipients_matching(account=audience.account_id, filter=audience.filter).count()
    return AudienceMember.objects.filter(audience=audience).count()


def audience_members(audience: Audience) -> models.QuerySet[AudienceMember]:
    """The audience's member rows with their recipients, in id order (fan-out's order)."""
    return AudienceMember.objects.filter(audience=audience).select_related("recipient").order_by("pk")


# --- Freeze ----------------------------------------------------------------------------


def audience_freeze(audience: Audience, *, campaign: Campaign | None = None) -> int:
    """Write a filter audience's current matches into its members (one INSERT ... SELECT,
    in recipient id order) and return the member count. Members that no longer match are
    removed first, unless a campaign other than `campaign` (the one starting) is running
    or paused on the audience: its walk must not lose rows. A list audience is left as it
    is."""
    with transaction.atomic():
        if audience.kind == AudienceKind.FILTER:
            # One freeze of an audience at a time (two campaigns starting together).
            Audience.objects.select_for_update().filter(pk=audience.pk).exists()
            matching = recipients_matching(account=audience.account_id, filter=audience.filter)
            walking = Campaign.objects.filter(audience=audience, status__in=WALKING_STATUSES)
            if campaign is not None:
                walking = walking.exclude(pk=campaign.pk)
            if not walking.exists():
                # NOT EXISTS, an anti-join, rather than NOT IN over a large id list.
                still = matching.filter(pk=OuterRef("recipient_id"))
                AudienceMember.objects.filter(audience=audience).exclude(Exists(still)).delete()
            _members_insert_select(audience, matching)
        return _member_count_store(audience)


def _members_insert_select(audience: Audience, recipients: models.QuerySet[Recipient]) -> None:
    """INSERT INTO members SELECT the recipients' ids: one statement, no rows through Python;
    a recipient already a member is skipped."""
    ids = recipients.order_by().annotate(member_recipient=F("pk")).values_list("member_recipient")
    select_sql, select_params = ids.query.sql_with_params()
    quote = connection.ops.quote_name
    meta = AudienceMember._meta
    columns = ", ".join(
        quote(meta.get_field(name).column) for name in ("audience", "recipient", "attributes", "created_at")
    )
    attributes = "CAST(%s AS jsonb)" if connection.vendor == "postgresql" else "%s"
    # SQLite needs a WHERE in an INSERT ... SELECT ... ON CONFLICT (its parsing ambiguity).
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({columns}) "
        f"SELECT %s, matching.member_recipient, {attributes}, %s FROM ({select_sql}) AS matching WHERE 1 = 1 "
        "ORDER BY matching.member_recipient ON CONFLICT DO NOTHING"
    )
    with connection.cursor() as cursor:
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        cursor.execute(sql, [audience.pk, "{}", now, *select_params])


def _member_count_store(audience: Audience) -> int:
    count = AudienceMember.objects.filter(audience=audience).count()
    now = timezone.now()
    Audience.objects.filter(pk=audience.pk).update(member_count=count, updated_at=now)
    audience.member_count, audience.updated_at = count, now
    return count


# --- CSV upload ------------------------------------------------------------------------


@dataclass
class _Row:
    line: int
    details: dict  # for recipients_resolve
    attributes: dict


@dataclass
class _Import:
    imported: int = 0
    duplicates: int = 0
    rejected: list[dict] = field(default_factory=list)
    rejected_count: int = 0

    def reject(self, line: int, reason: str) -> None:
        self.rejected_count += 1
        if len(self.rejected) < REJECTED_REPORTED:
            self.rejected.append({"line": line, "reason": reason})


def audience_import_csv(audience: Audience, file, *, chunk_size: int = IMPORT_CHUNK_ROWS) -> dict:
    """Add a CSV's rows to a list audience as members, streaming the file (never read
    whole) and writing it a chunk at a time: one recipients_resolve, one member SELECT and
    one member INSERT per chunk. Returns {"imported", "duplicates", "rejected" (the first
    REJECTED_REPORTED as {"line", "reason"}, the header being line 1), "rejected_count",
    "member_count"}. A recipient already a member counts as a duplicate and gets the row's
    attributes laid over its own. Refuses (ValidationError on "file") a file that is not
    UTF-8, is empty or has no header naming an address column; AudienceConflict for a
    filter audience."""
    if audience.kind != AudienceKind.LIST:
        raise AudienceConflict(
            {"file": ["This is a filter audience: its members come from its filter, not from uploads."]}
        )
    _utf8_check(file)
    file.seek(0)
    text = io.TextIOWrapper(file, encoding="utf-8-sig", newline="")
    try:
        result = _import(audience, text, chunk_size)
    finally:
        text.detach()  # the upload is the caller's to close
    return {
        "imported": result.imported,
        "duplicates": result.duplicates,
        "rejected": result.rejected,
        "rejected_count": result.rejected_count,
        "member_count": _member_count_store(audience),
    }


def _utf8_check(file) -> None:
    """Refuse a file that is not UTF-8 before a row is written (decoding it a block at a
    time, so that an error late in the file does not leave half an import behind)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines_before = 0
    file.seek(0)
    while True:
        block = file.read(SCAN_BLOCK_BYTES)
        try:
            decoder.decode(block, final=not block)
        except UnicodeDecodeError as exc:
            pending = decoder.getstate()[0] if block else b""
            line = lines_before + (pending + block)[: max(exc.start, 0)].count(b"\n") + 1
            raise ValidationError(
                {"file": [f"The file is not UTF-8 text (line {line}); save it as CSV UTF-8 and upload it again."]}
            ) from None
        if not block:
            return
        lines_before += block.count(b"\n")


class _Lines:
    """The text's lines for csv.reader, none read longer than MAX_LINE_CHARS: the rest of
    a longer line is skipped, and it stands as a blank line whose number is noted."""

    def __init__(self, text):
        self.text = text
        self.count = 0
        self.too_long: set[int] = set()

    def __iter__(self):
        return self

    def __next__(self) -> str:
        line = self.text.readline(MAX_LINE_CHARS)
        if not line:
            raise StopIteration
        self.count += 1
        if len(line) == MAX_LINE_CHARS and not line.endswith(("\n", "\r")):
            while line and not line.endswith(("\n", "\r")):
                line = self.text.readline(MAX_LINE_CHARS)
            self.too_long.add(self.count)
            return "\n"
        return line


def _import(audience: Audience, text, chunk_size: int) -> _Import:
    lines = _Lines(text)
    # csv.reader rather than DictReader: it hands back blank lines and bad records too, so
    # that every row's line number is exact.
    reader = csv.reader(lines)
    columns = _header(reader)
    result = _Import()
    chunk: list[_Row] = []
    end = reader.line_num
    while True:
        line = end + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            end = reader.line_num
            result.reject(line, f"Not valid CSV: {exc}.")
            continue
        end = reader.line_num
        if line in lines.too_long:
            result.reject(line, f"The line is longer than {MAX_LINE_CHARS} characters.")
            continue
        if not any(cell.strip() for cell in cells):
            continue  # a blank line, or a row of empty cells (as spreadsheets leave at the end)
        row = _row_parse(line, cells, columns)
        if isinstance(row, str):
            result.reject(line, row)
            continue
        chunk.append(row)
        if len(chunk) >= chunk_size:
            _chunk_write(audience, chunk, result)
            chunk = []
    if chunk:
        _chunk_write(audience, chunk, result)
    return result


def _header(reader) -> list[str]:
    """The columns' names (known ones lower-cased), or a ValidationError for a file with no
    usable header."""
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise ValidationError({"file": [f"The first line is not valid CSV: {exc}."]}) from None
    if not header or not any(cell.strip() for cell in header):
        raise ValidationError(
            {"file": ["The file is empty or its first line is blank: it must start with a header line."]}
        )
    columns = []
    for cell in header:
        name = cell.strip()
        columns.append(name.lower() if name.lower() in KNOWN_COLUMNS else name)
    named = [name for name in columns if name]
    repeated = sorted({name for name in named if named.count(name) > 1})
    if repeated:
        raise ValidationError({"file": [f"The header names a column twice: {', '.join(repeated)}."]})
    if not any(name in ADDRESS_COLUMNS for name in columns):
        shown = ", ".join(named[:10]) + (", ..." if len(named) > 10 else "")
        raise ValidationError(
            {
                "file": [
                    "The first line must be a header naming the columns, with at least one of phone, email, "
                    f"external_id; it has: {shown}."
                ]
            }
        )
    return columns


def _row_parse(line: int, cells: list[str], columns: list[str]) -> _Row | str:
    """The row's recipient details and attributes, or why it is refused."""
    if len(cells) > len(columns) and any(cell.strip() for cell in cells[len(columns) :]):
        return f"The row has {len(cells)} fields; the header has {len(columns)}."
    if any("\x00" in cell for cell in cells):
        return "The row holds a NUL character."
    values = {name: cell.strip() for name, cell in zip(columns, cells, strict=False) if name}
    details = {name: values[name] for name in KNOWN_COLUMNS if values.get(name)}
    if not any(details.get(name) for name in ADDRESS_COLUMNS):
        return "No phone, email or external_id."
    problems = []
    if "phone" in details:
        phone = PHONE_PUNCTUATION.sub("", details["phone"])
        if not re.fullmatch(E164, phone):
            problems.append(f"phone {details['phone']!r} is not an E.164 number (such as +14155550123)")
        details["phone"] = phone
    if "email" in details:
        try:
            validate_email(details["email"])
            if len(details["email"]) > COLUMN_MAX_CHARS["email"]:
                raise ValidationError("too long")
        except ValidationError:
            problems.append(f"email {details['email']!r} is not a valid email address")
    if "timezone" in details and details["timezone"] not in _time_zones():
        problems.append(f"timezone {details['timezone']!r} is not an IANA time zone (such as Europe/Madrid)")
    if "locale" in details and (
        len(details["locale"]) > COLUMN_MAX_CHARS["locale"] or not re.fullmatch(LOCALE, details["locale"])
    ):
        problems.append(f"locale {details['locale']!r} is not a locale (such as es or es-MX)")
    for name in ("external_id", "name"):
        if len(details.get(name, "")) > COLUMN_MAX_CHARS[name]:
            problems.append(f"{name} is longer than {COLUMN_MAX_CHARS[name]} characters")
    attributes = {name: value for name, value in values.items() if name not in KNOWN_COLUMNS and value}
    if len(json.dumps(attributes)) > settings.BEACON_MAX_JSON_CHARS:
        problems.append(f"the attributes are longer than {settings.BEACON_MAX_JSON_CHARS} characters as JSON")
    if problems:
        reason = "; ".join(problems)
        return reason[0].upper() + reason[1:] + "."
    return _Row(line=line, details=details, attributes=attributes)


def _chunk_write(audience: Audience, chunk: list[_Row], result: _Import) -> None:
    """One chunk, in one transaction: its recipients found or created in one call, then
    the new members inserted and the existing ones' attributes updated, in bulk."""
    with transaction.atomic():
        recipients = recipients_resolve(account=audience.account, details=[row.details for row in chunk])
        # By recipient, in file order: a later row's attributes over an earlier one's.
        attributes: dict[int, dict] = {}
        for row, recipient in zip(chunk, recipients, strict=True):
            attributes.setdefault(recipient.pk, {}).update(row.attributes)
        existing = {
            recipient_id: (member_id, stored)
            for member_id, recipient_id, stored in AudienceMember.objects.filter(
                audience=audience, recipient_id__in=list(attributes)
            ).values_list("pk", "recipient_id", "attributes")
        }
        new = [
            AudienceMember(audience=audience, recipient_id=recipient_id, attributes=given)
            for recipient_id, given in attributes.items()
            if recipient_id not in existing
        ]
        # A member a concurrent upload has just added is skipped, not an error.
        AudienceMember.objects.bulk_create(new, ignore_conflicts=True)
        changed = []
        for recipient_id, (member_id, stored) in existing.items():
            merged = {**(stored or {}), **attributes[recipient_id]}
            if merged != stored:
                changed.append(AudienceMember(pk=member_id, attributes=merged))
        rows_update(AudienceMember, changed, ["attributes"])
    result.imported += len(new)
    result.duplicates += len(chunk) - len(new)
