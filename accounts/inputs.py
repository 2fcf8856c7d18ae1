"""Input rules every endpoint shares, so that no request body or query can reach the
database in a form PostgreSQL refuses (a 500): no NUL character in any JSON string, and
no UTC offset beyond what a real time zone uses."""

from __future__ import annotations

import json
from datetime import timedelta

import django_filters
from django import forms
from django.conf import settings
from django_filters.fields import IsoDateTimeField
from rest_framework import exceptions, parsers, serializers

# Real time zones stay within -12:00 .. +14:00; PostgreSQL refuses beyond +-15:59.
MAX_UTC_OFFSET = timedelta(hours=14)
OFFSET_MESSAGE = "The UTC offset must be between -14:00 and +14:00."
NUL_MESSAGE = "NUL characters (\\u0000) are not allowed."


def offset_problem(value) -> str | None:
    offset = value.utcoffset() if value is not None and value.tzinfo is not None else None
    if offset is not None and abs(offset) > MAX_UTC_OFFSET:
        return OFFSET_MESSAGE
    return None


def nul_path(value, path: str = "") -> str | None:
    """The dotted path of the first string (key or value) holding a NUL, or None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and "\x00" in key:
                return where
            found = nul_path(item, where)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = nul_path(item, f"{path}[{index}]" if path else f"[{index}]")
            if found is not None:
                return found
    return None


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, refusing a NUL anywhere in the document with a 400 naming where:
    PostgreSQL's text and jsonb cannot hold one."""

    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(stream, media_type, parser_context)
        path = nul_path(data)
        if path is not None:
            raise exceptions.ValidationError({path or "body": [NUL_MESSAGE]})
        return data


class JSONObjectField(serializers.DictField):
    """A JSON object of at most BEACON_MAX_JSON_CHARS characters once serialized."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        limit = settings.BEACON_MAX_JSON_CHARS
        size = len(json.dumps(value, separators=(",", ":"), default=str))
        if size > limit:
            raise serializers.ValidationError(f"At most {limit} characters as JSON; this one has {size}.")
        return value


class DateTimeField(serializers.DateTimeField):
    """A date-time whose UTC offset a real time zone could have."""

    def enforce_timezone(self, value):
        # Checked as given, before it is moved to UTC.
        problem = offset_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        return super().enforce_timezone(value)


class _OffsetCheckedIsoDateTimeField(IsoDateTimeField):
    def to_python(self, value):
        parsed = super().to_python(value)
        if offset_problem(parsed):
            raise forms.ValidationError(OFFSET_MESSAGE)
        return parsed


class IsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    """django-filter's ISO 8601 filter, with the offset check of DateTimeField."""

    field_class = _OffsetCheckedIsoDateTimeField
