"""/api/v1/inbox/: a recipient's in-app inbox, as their app reads it.

Every endpoint names the recipient by the account's external id for them (`?recipient=`);
another account's recipient, or none, is a 404. The list is newest first, cursor-paginated
on the item id. The stream (server-sent events) passes on new items as dispatch stores them:
the app connects with the API token, or, from a browser's EventSource (which cannot send
headers), with a short-lived signed token from stream-token/.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlencode

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core import signing
from django.core.handlers.asgi import ASGIRequest
from django.db import connection
from django.http import JsonResponse, StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, generics, serializers
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import BearerTokenAuthentication
from accounts.schema import DESCRIPTIONS

from .models import InboxItem, Recipient
from .services import inbox
from .services.inbox import (
    STATUSES,
    inbox_backlog,
    inbox_item_archive,
    inbox_item_read,
    inbox_items,
    inbox_read_all,
    inbox_unread_count,
    item_json,
    recipient_for_inbox,
    stream_channel,
)

logger = logging.getLogger("beacon.inbox")

NOT_FOUND = "The account has no recipient with this external id."
ITEM_NOT_FOUND = "The account has no inbox item with this id."
EXTERNAL_ID_MAX = 200
BIGINT_MAX = 2**63 - 1  # InboxItem ids are BigAutoField
STREAM_TOKEN_SALT = "beacon.inbox.stream"
STREAM_RETRY_MS = 3000
STREAM_POLL_SECONDS = 1.0  # without Redis, how often a stream reads the database
BACKLOG_PAGE = 500
# A 404 that the schema's post-processing (accounts.schema) does not infer from the path.
NOT_FOUND_RESPONSE = OpenApiResponse(response={"$ref": "#/components/schemas/Error"}, description=DESCRIPTIONS["404"])


def stream_token_seconds() -> int:
    return int(getattr(settings, "BEACON_STREAM_TOKEN_SECONDS", 3600))


def stream_max_seconds() -> float:
    return float(getattr(settings, "BEACON_STREAM_MAX_SECONDS", 300))


def stream_heartbeat_seconds() -> float:
    return float(getattr(settings, "BEACON_STREAM_HEARTBEAT_SECONDS", 15))


# --- Serializers --------------------------------------------------------------------------


class RecipientQuerySerializer(serializers.Serializer):
    recipient = serializers.CharField(
        max_length=EXTERNAL_ID_MAX, trim_whitespace=False, help_text="The account's external id for the recipient."
    )


class InboxListQuerySerializer(RecipientQuerySerializer):
    status = serializers.ChoiceField(
        choices=list(STATUSES),
        required=False,
        allow_blank=True,
        default="",
        help_text="unread, read (both leave archived items out), archived or all; by default every item not archived.",
    )


class InboxItemSerializer(serializers.ModelSerializer):
    delivery_id = serializers.UUIDField(read_only=True)
    read = serializers.SerializerMethodField()
    archived = serializers.SerializerMethodField()

    class Meta:
        model = InboxItem
        fields = [
            "id",
            "delivery_id",
            "category",
            "title",
            "body",
            "action_url",
            "data",
            "created_at",
            "read_at",
            "archived_at",
            "read",
            "archived",
        ]
        read_only_fields = fields

    def get_read(self, item) -> bool:
        return item.read_at is not None

    def get_archived(self, item) -> bool:
        return item.archived_at is not None


class UnreadCountSerializer(serializers.Serializer):
    recipient = serializers.CharField(help_text="The external id asked about.")
    unread = serializers.IntegerField(help_text="Items neither read nor archived.")


class ReadAllSerializer(serializers.Serializer):
    updated = serializers.IntegerField(help_text="How many unread items were marked read.")


class StreamTokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="Signed; good for this recipient of this account only.")
    expires_at = serializers.DateTimeField()
    url = serializers.CharField(help_text="The stream's path with the recipient and the token: for an EventSource.")


# --- Helpers ------------------------------------------------------------------------------


def query_valid(serializer_class, request) -> dict:
    serializer = serializer_class(data=request.query_params)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def recipient_or_404(request, query: dict | None = None) -> Recipient:
    """The account's recipient named by `?recipient=` (a 400 without it, a 404 for none)."""
    query = query if query is not None else query_valid(RecipientQuerySerializer, request)
    recipient = recipient_for_inbox(account=request.user, external_id=query["recipient"])
    if recipient is None:
        raise exceptions.NotFound(NOT_FOUND)
    return recipient


def item_or_404(account, pk: int) -> InboxItem:
    item = InboxItem.objects.filter(pk=pk, account=account).first() if pk <= BIGINT_MAX else None
    if item is None:
        raise exceptions.NotFound(ITEM_NOT_FOUND)
    return item


def stream_token_issue(recipient: Recipient) -> str:
    return signing.dumps({"a": recipient.account_id, "r": recipient.pk}, salt=STREAM_TOKEN_SALT)


class StreamTokenInvalid(Exception):
    pass


def stream_token_read(token: str) -> tuple[int, int]:
    """(account id, recipient id) of a stream token; StreamTokenInvalid when it is forged,
    malformed or expired."""
    try:
        payload = signing.loads(token, salt=STREAM_TOKEN_SALT, max_age=stream_token_seconds())
    except signing.SignatureExpired:
        raise StreamTokenInvalid("The stream token has expired; ask stream-token/ for another.") from None
    except signing.BadSignature:
        raise StreamTokenInvalid("Invalid stream token.") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("a"), int) or not isinstance(payload.get("r"), int):
        raise StreamTokenInvalid("Invalid stream token.")
    return payload["a"], payload["r"]


# --- The inbox ----------------------------------------------------------------------------


class InboxPagination(CursorPagination):
    ordering = "-id"
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100


class InboxListView(generics.ListAPIView):
    """The recipient's items, newest first (by default every item not archived)."""

    serializer_class = InboxItemSerializer
    pagination_class = InboxPagination
    filter_backends = []

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return InboxItem.objects.none()
        query = query_valid(InboxListQuerySerializer, self.request)
        return inbox_items(recipient=recipient_or_404(self.request, query), status=query["status"])

    @extend_schema(
        parameters=[InboxListQuerySerializer], responses={200: InboxItemSerializer(many=True), 404: NOT_FOUND_RESPONSE}
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


class InboxUnreadCountView(APIView):
    """How many of the recipient's items are neither read nor archived (an app's badge)."""

    @extend_schema(
        parameters=[RecipientQuerySerializer], responses={200: UnreadCountSerializer, 404: NOT_FOUND_RESPONSE}
    )
    def get(self, request):
        recipient = recipient_or_404(request)
        return Response({"recipient": recipient.external_id, "unread": inbox_unread_count(recipient=recipient)})


class InboxReadAllView(APIView):
    """Mark every unread item of the recipient read."""

    @extend_schema(
        request=None, parameters=[RecipientQuerySerializer], responses={200: ReadAllSerializer, 404: NOT_FOUND_RESPONSE}
    )
    def post(self, request):
        recipient = recipient_or_404(request)
        return Response({"updated": inbox_read_all(recipient=recipient)})


class InboxItemReadView(APIView):
    """Mark one item read (again: no change)."""

    @extend_schema(request=None, responses={200: InboxItemSerializer})
    def post(self, request, pk):
        item = inbox_item_read(item=item_or_404(request.user, pk))
        return Response(InboxItemSerializer(item).data)


class InboxItemArchiveView(APIView):
    """Archive one item: it leaves the default list and the unread count."""

    @extend_schema(request=None, responses={200: InboxItemSerializer})
    def post(self, request, pk):
        item = inbox_item_archive(item=item_or_404(request.user, pk))
        return Response(InboxItemSerializer(item).data)


class InboxStreamTokenView(APIView):
    """A signed token for the recipient's stream, valid BEACON_STREAM_TOKEN_SECONDS, for a
    browser's EventSource (which cannot send an Authorization header): `url` is the stream
    with it."""

    @extend_schema(
        request=None,
        parameters=[RecipientQuerySerializer],
        responses={200: StreamTokenSerializer, 404: NOT_FOUND_RESPONSE},
    )
    def post(self, request):
        recipient = recipient_or_404(request)
        token = stream_token_issue(recipient)
        expires_at = timezone.now() + timedelta(seconds=stream_token_seconds())
        query = urlencode({"recipient": recipient.external_id, "token": token})
        return Response({"token": token, "expires_at": expires_at, "url": f"{reverse('inbox-stream')}?{query}"})


# --- The stream ---------------------------------------------------------------------------


def error(status: int, message: str, errors: dict | None = None, headers: dict | None = None) -> JsonResponse:
    response = JsonResponse({"message": message, "errors": errors or {}}, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def unauthorized(message: str) -> JsonResponse:
    return error(401, message, headers={"WWW-Authenticate": BearerTokenAuthentication().authenticate_header(None)})


def sse_event(item: dict) -> str:
    return f"id: {item['id']}\nevent: notification\ndata: {json.dumps(item, separators=(',', ':'))}\n\n"


def latest_item_id(recipient_id: int) -> int:
    return InboxItem.objects.filter(recipient_id=recipient_id).order_by("-pk").values_list("pk", flat=True).first() or 0


def backlog_page(recipient_id: int, after: int) -> list[dict]:
    return [item_json(item) for item in inbox_backlog(recipient_id=recipient_id, after=after, limit=BACKLOG_PAGE)]


@dataclass
class StreamPlan:
    """Who a stream is for and where it starts: after the client's Last-Event-ID, or (None)
    from now on."""

    account_id: int
    recipient_id: int
    after: int | None
    redis: bool

    @property
    def channel(self) -> str:
        return stream_channel(self.account_id, self.recipient_id)


class StreamState:
    """What a stream has sent and when it pings and ends; both generators share it."""

    def __init__(self, plan: StreamPlan):
        self.plan = plan
        self.sent: set[int] = set()
        self.watermark = plan.after or 0  # the highest id seen: where a database poll reads on
        self.heartbeat = stream_heartbeat_seconds()
        now = time.monotonic()
        self.deadline = now + stream_max_seconds()
        self.next_ping = now + self.heartbeat

    def opening(self, latest: int) -> str:
        """The reconnection delay; on a live start, the recipient's latest id without an
        event, so that a browser that reconnects before any item came resumes from it."""
        lines = f"retry: {STREAM_RETRY_MS}\n\n"
        if self.plan.after is None:
            self.watermark = latest
            if latest:
                lines += f"id: {latest}\n\n"
        return lines

    def events(self, items: list[dict]) -> str:
        """The items not sent yet (a live item may also be in the backlog) and after the
        client's Last-Event-ID, as events."""
        out = []
        for item in items:
            pk = item.get("id")
            if not isinstance(pk, int) or pk in self.sent or (self.plan.after is not None and pk <= self.plan.after):
                continue
            self.sent.add(pk)
            self.watermark = max(self.watermark, pk)
            out.append(sse_event(item))
        return "".join(out)

    def wait(self) -> float | None:
        """Seconds until the next ping is due (at most), or None once the stream is over."""
        now = time.monotonic()
        if now >= self.deadline:
            return None
        return max(0.0, min(self.next_ping, self.deadline) - now)

    def ping(self) -> str:
        now = time.monotonic()
        if now < self.next_ping or now >= self.deadline:
            return ""
        while self.next_ping <= now:
            self.next_ping += self.heartbeat
        return ": ping\n\n"


def pubsub_item(message) -> list[dict]:
    if not message or message.get("type") != "message":
        return []
    try:
        item = json.loads(message["data"])
    except (TypeError, ValueError):
        return []
    return [item] if isinstance(item, dict) else []


def stream_sync(plan: StreamPlan):
    """The stream for a WSGI server (a thread per stream)."""
    state = StreamState(plan)
    pubsub = None
    try:
        if plan.redis:
            try:
                pubsub = inbox.redis_client().pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(plan.channel)  # before the backlog is read: nothing falls between
            except Exception as exc:  # noqa: BLE001 - without Redis, the stream polls the database
                logger.warning("inbox stream: no Redis subscription (%s); polling", exc.__class__.__name__)
                pubsub = None
        yield state.opening(latest_item_id(plan.recipient_id) if plan.after is None else 0)
        after = plan.after
        while after is not None:
            page = backlog_page(plan.recipient_id, after)
            if page:
                yield state.events(page)
            after = page[-1]["id"] if len(page) == BACKLOG_PAGE else None
        while (wait := state.wait()) is not None:
            if pubsub is not None:
                try:
                    chunk = state.events(pubsub_item(pubsub.get_message(timeout=wait)))
                except Exception as exc:  # noqa: BLE001 - the client reconnects and resumes
                    logger.warning("inbox stream: Redis failed (%s); ending the stream", exc.__class__.__name__)
                    return
            else:
                time.sleep(min(wait, STREAM_POLL_SECONDS))
                chunk = state.events(backlog_page(plan.recipient_id, state.watermark))
            chunk += state.ping()
            if chunk:
                yield chunk
    finally:
        if pubsub is not None:
            pubsub.close()


def _release_connection() -> None:
    """Close this thread's database connection, unless a transaction holds it (a test's)."""
    if not connection.in_atomic_block:
        connection.close()


def _closing(read):
    """`read`, then the thread's database connection closed (see the stream view)."""

    def closed(*args):
        try:
            return read(*args)
        finally:
            _release_connection()

    return closed


async def stream_async(plan: StreamPlan):
    """The stream for an ASGI server: an async generator (Django would read a sync one to
    its end before sending anything), Redis through redis.asyncio, the database in the
    request's thread."""
    import redis.asyncio

    state = StreamState(plan)
    client = pubsub = None
    try:
        if plan.redis:
            try:
                client = redis.asyncio.Redis.from_url(settings.REDIS_URL)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(plan.channel)  # before the backlog is read
            except Exception as exc:  # noqa: BLE001 - without Redis, the stream polls the database
                logger.warning("inbox stream: no Redis subscription (%s); polling", exc.__class__.__name__)
                await _close_redis(pubsub, client)
                client = pubsub = None
        latest = await sync_to_async(_closing(latest_item_id))(plan.recipient_id) if plan.after is None else 0
        yield state.opening(latest)
        after = plan.after
        while after is not None:
            page = await sync_to_async(_closing(backlog_page))(plan.recipient_id, after)
            if page:
                yield state.events(page)
            after = page[-1]["id"] if len(page) == BACKLOG_PAGE else None
        while (wait := state.wait()) is not None:
            if pubsub is not None:
                try:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
                except Exception as exc:  # noqa: BLE001 - the client reconnects and resumes
                    logger.warning("inbox stream: Redis failed (%s); ending the stream", exc.__class__.__name__)
                    return
                chunk = state.events(pubsub_item(message))
            else:
                await asyncio.sleep(min(wait, STREAM_POLL_SECONDS))
                chunk = state.events(await sync_to_async(_closing(backlog_page))(plan.recipient_id, state.watermark))
            chunk += state.ping()
            if chunk:
                yield chunk
    finally:
        await _close_redis(pubsub, client)


async def _close_redis(pubsub, client) -> None:
    try:
        if pubsub is not None:
            await pubsub.aclose()
        if client is not None:
            await client.aclose()
    except Exception as exc:  # noqa: BLE001 - closing a broken connection
        logger.debug("inbox stream: closing Redis: %s", exc.__class__.__name__)


def last_event_id(request) -> int | None | JsonResponse:
    raw = request.headers.get("Last-Event-ID") or request.GET.get("last_event_id") or ""
    if not raw.strip():
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        value = -1
    if not 0 <= value <= BIGINT_MAX:
        return error(
            400,
            "Invalid input: Last-Event-ID: an event id (a non-negative integer).",
            {"Last-Event-ID": ["An event id (a non-negative integer)."]},
        )
    return value


def inbox_stream(request):
    """The view: authenticate (Bearer header, or the signed token), find the recipient and
    answer the stream: an async generator under ASGI, a sync one under WSGI."""
    if request.method != "GET":
        return error(405, f'Method "{request.method}" not allowed.', headers={"Allow": "GET"})
    try:
        authenticated = BearerTokenAuthentication().authenticate(request)
    except exceptions.AuthenticationFailed as exc:
        return unauthorized(str(exc.detail))
    external_id = request.GET.get("recipient", "")
    token = request.GET.get("token", "")
    if authenticated is None and not token:
        return unauthorized("Authentication credentials were not provided.")
    if not external_id:
        return error(
            400, "Invalid input: recipient: This field is required.", {"recipient": ["This field is required."]}
        )
    if authenticated is not None:
        recipient = recipient_for_inbox(account=authenticated[0], external_id=external_id)
        if recipient is None:
            return error(404, NOT_FOUND)
    else:
        try:
            account_id, recipient_id = stream_token_read(token)
        except StreamTokenInvalid as exc:
            return unauthorized(str(exc))
        recipient = Recipient.objects.filter(pk=recipient_id, account_id=account_id).first()
        if recipient is None or recipient.external_id != external_id:
            return error(403, "This stream token is for another recipient.")
    after = last_event_id(request)
    if isinstance(after, JsonResponse):
        return after
    plan = StreamPlan(
        account_id=recipient.account_id,
        recipient_id=recipient.pk,
        after=after,
        redis=inbox.redis_client() is not None,
    )
    if isinstance(request, ASGIRequest):
        # A stream lives for minutes in a thread of its own (Django runs each ASGI request's
        # sync code in one): it must not keep a database connection all that time, or a
        # hundred streams exhaust the server's connections. Its few reads open and close one.
        _release_connection()
        stream = stream_async(plan)
    else:
        stream = stream_sync(plan)
    response = StreamingHttpResponse(stream, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


class InboxStreamView(APIView):
    """The recipient's new items as server-sent events (`event: notification`, the id the
    item's, the data its JSON), until BEACON_STREAM_MAX_SECONDS; a `: ping` comment every
    15 seconds. With Last-Event-ID (or `last_event_id`) the items after it come first;
    without, only items from now on. Authenticate with the Bearer header, or with `token`
    from stream-token/ (an EventSource sends no headers)."""

    # Documented here; served by `inbox_stream`, a plain Django view: DRF's content
    # negotiation would refuse an EventSource's Accept: text/event-stream. (The classes
    # below only shape the schema: the header or the token, and nothing else.)
    authentication_classes = [BearerTokenAuthentication]
    permission_classes = [AllowAny]

    def dispatch(self, request, *args, **kwargs):
        return inbox_stream(request)

    @extend_schema(
        parameters=[
            RecipientQuerySerializer,
            OpenApiParameter("token", str, description="A stream token from stream-token/, instead of the header."),
            OpenApiParameter("last_event_id", int, description="Resume after this item id (as Last-Event-ID)."),
            OpenApiParameter("Last-Event-ID", int, OpenApiParameter.HEADER, description="Resume after this item id."),
        ],
        responses={
            (200, "text/event-stream"): OpenApiResponse(OpenApiTypes.STR, description="The event stream."),
            403: dict,
            404: NOT_FOUND_RESPONSE,
        },
    )
    def get(self, request):  # pragma: no cover - dispatch serves the stream
        return inbox_stream(request)
