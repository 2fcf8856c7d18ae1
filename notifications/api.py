import functools
import hashlib
import json

import anymail.urls
from anymail.exceptions import AnymailWebhookValidationFailure
from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.urls import URLPattern
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, mixins, parsers, permissions, status, viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.errors import Conflict, Unprocessable
from providers.base import WebhookSignatureInvalid
from providers.registry import platform_providers_health, providers_configuration
from providers.twilio_sms import CALL_STATUS_MAP as TWILIO_CALL_STATUS_MAP
from providers.twilio_sms import STATUS_MAP as TWILIO_STATUS_MAP
from providers.twilio_sms import verify_signature
from templates.api import UUID_PATTERN
from templates.models import Channel
from templates.selectors import template_get

from .filters import DeliveryLogFilter
from .models import Delivery, Heartbeat
from .selectors import delivery_detail, delivery_for_callback, delivery_list
from .serializers import (
    AcceptedSerializer,
    BatchAcceptedSerializer,
    BatchSendSerializer,
    DeliveryBriefSerializer,
    DeliveryDetailSerializer,
    DeliveryLogSerializer,
    SendSerializer,
    TemplateTestSerializer,
    accept_arguments,
    batch_arguments,
)
from .services import (
    BatchInvalid,
    IdempotencyConflict,
    InvalidTransition,
    delivery_resend,
    delivery_track,
    notification_accept,
    notifications_accept_batch,
)
from .services.inbound import sms_inbound
from .services.sweep import SWEEP_HEARTBEAT
from .services.track import record_credentials
from .services.upkeep import failure_rates_summary


def request_fingerprint(data) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def idempotency_key(request) -> str:
    key = request.headers.get("Idempotency-Key", "").strip()
    if len(key) > 255:
        raise exceptions.ValidationError({"Idempotency-Key": ["At most 255 characters."]})
    return key


IDEMPOTENCY_HEADER = OpenApiParameter("Idempotency-Key", str, OpenApiParameter.HEADER, required=False)


def accept_request(request, serializer_class, accept, arguments) -> Response:
    """Validate a send or batch send, accept it under its Idempotency-Key, answer 202."""
    serializer = serializer_class(data=request.data, context={"account": request.user})
    key = idempotency_key(request)
    serializer.is_valid(raise_exception=True)
    try:
        accepted = accept(
            account=request.user,
            **arguments(serializer.validated_data),
            idempotency_key=key,
            request_hash=request_fingerprint(request.data) if key else "",
        )
    except IdempotencyConflict:
        raise Unprocessable("This Idempotency-Key was used with a different request body.") from None
    except BatchInvalid as exc:
        raise exceptions.ValidationError({"recipients": exc.errors}) from None
    headers = {"Idempotent-Replayed": "true"} if accepted.replayed else {}
    return Response(accepted.body, status=accepted.status_code, headers=headers)


class SendView(APIView):
    """Accept a notification for one recipient on one or more channels."""

    @extend_schema(request=SendSerializer, responses={202: AcceptedSerializer}, parameters=[IDEMPOTENCY_HEADER])
    def post(self, request):
        return accept_request(request, SendSerializer, notification_accept, accept_arguments)


class BatchSendView(APIView):
    """Accept one message for up to BEACON_BATCH_MAX_RECIPIENTS recipients, each with its own
    context: validated as a whole (errors keyed by item index, nothing written), answered
    with the notification ids in request order."""

    @extend_schema(
        request=BatchSendSerializer, responses={202: BatchAcceptedSerializer}, parameters=[IDEMPOTENCY_HEADER]
    )
    def post(self, request):
        return accept_request(request, BatchSendSerializer, notifications_accept_batch, batch_arguments)


class TemplateTestView(APIView):
    """Send a test of a template to one address, using its sample data under the given context."""

    @extend_schema(request=TemplateTestSerializer, responses={202: AcceptedSerializer})
    def post(self, request, pk):
        template = template_get(account=request.user, template_id=pk)
        if template is None:
            raise exceptions.NotFound()
        serializer = TemplateTestSerializer(data=request.data, context={"account": request.user})
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        accepted = notification_accept(
            account=request.user,
            channels=[data["channel"]],
            recipient=data["recipient"],
            template=template,
            context={**template.current_version.sample_context, **data["context"]},
            category="system",
            is_test=True,
            source="template-test",
        )
        return Response(accepted.body, status=status.HTTP_202_ACCEPTED)


class DeliveryLogViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Deliveries, newest first; the detail carries every attempt and event."""

    filterset_class = DeliveryLogFilter
    lookup_value_regex = UUID_PATTERN

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Delivery.objects.none()
        return delivery_list(account=self.request.user)

    def get_serializer_class(self):
        return DeliveryDetailSerializer if self.action == "retrieve" else DeliveryLogSerializer

    def retrieve(self, request, pk=None):
        delivery = delivery_detail(account=request.user, delivery_id=pk)
        if delivery is None:
            raise exceptions.NotFound()
        return Response(DeliveryDetailSerializer(delivery).data)


class ResendView(APIView):
    """Send a failed delivery again, as a new delivery."""

    @extend_schema(request=None, responses={202: DeliveryBriefSerializer})
    def post(self, request, pk):
        delivery = delivery_list(account=request.user).filter(pk=pk).first()
        if delivery is None:
            raise exceptions.NotFound()
        try:
            copy = delivery_resend(delivery=delivery)
        except InvalidTransition as exc:
            raise Conflict(str(exc)) from None
        return Response(DeliveryBriefSerializer(copy).data, status=status.HTTP_202_ACCEPTED)


class HealthView(APIView):
    """Database, broker, a worker's answer, the sweep's last run, provider configuration and
    the platform providers' health (breaker, success rate, p95 latency);
    503 when the database or broker is down, no worker answers or the sweep is overdue.
    `failure_rates` (channels whose failure rate is over the threshold) is information
    only: it never makes the answer a 503."""

    permission_classes = [permissions.AllowAny]
    authentication_classes = []

    @extend_schema(responses={200: dict, 503: dict})
    def get(self, request):
        checks = {
            "database": _check_database(),
            "broker": _check_broker(),
            "worker": _check_worker(),
            "sweep": _check_sweep(),
        }
        healthy = all(check["ok"] for check in checks.values())
        providers = providers_configuration()
        body = {
            "status": "ok" if healthy else "unhealthy",
            **checks,
            "providers": providers,
            # Information only, like failure_rates: a provider down is failed over or waited
            # out, and never makes the answer a 503.
            "provider_health": platform_providers_health(providers),
            "failure_rates": failure_rates_summary(),
        }
        return Response(body, status=status.HTTP_200_OK if healthy else status.HTTP_503_SERVICE_UNAVAILABLE)


def _check_database() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"ok": True, "vendor": connection.vendor}
    except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
        return {"ok": False, "vendor": connection.vendor, "error": exc.__class__.__name__}


def _check_broker() -> dict:
    from config.celery import app

    transport = app.conf.broker_url.split("://", 1)[0]
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return {"ok": True, "transport": transport}
    except Exception as exc:  # noqa: BLE001 - any failure means unhealthy
        return {"ok": False, "transport": transport, "error": exc.__class__.__name__}


def _check_worker() -> dict:
    """Whether a Celery worker answers a ping within BEACON_HEALTH_PING_SECONDS."""
    from config.celery import app

    try:
        replies = app.control.ping(timeout=settings.BEACON_HEALTH_PING_SECONDS)
    except Exception as exc:  # noqa: BLE001 - any failure means no worker is known to answer
        return {"ok": False, "error": exc.__class__.__name__}
    return {"ok": bool(replies), "answered": len(replies)}


def _check_sweep() -> dict:
    """When beat last had the sweep run; overdue after three intervals and half a minute."""
    last = Heartbeat.objects.filter(name=SWEEP_HEARTBEAT).values_list("at", flat=True).first()
    if last is None:
        return {"ok": False, "last_run": None}
    age = (timezone.now() - last).total_seconds()
    allowed = 3 * settings.BEACON_SWEEP_INTERVAL_SECONDS + 30
    return {"ok": age <= allowed, "last_run": last.isoformat(), "age_seconds": round(age, 1)}


def twilio_params(request, auth_token: str | None = None) -> dict:
    """The form parameters of a request from Twilio, once its X-Twilio-Signature holds over
    PUBLIC_BASE_URL and the path (so it holds behind a TLS-terminating proxy), signed with
    `auth_token` (by default the platform's); raises WebhookSignatureInvalid otherwise."""
    params = {key: request.data.get(key) for key in request.data}
    url = settings.PUBLIC_BASE_URL + request.get_full_path()
    verify_signature(
        url=url, params=params, signature=request.headers.get("X-Twilio-Signature", ""), auth_token=auth_token
    )
    return params


def invalid_signature() -> Response:
    return Response({"message": "Invalid signature.", "errors": {}}, status=status.HTTP_403_FORBIDDEN)


class TwilioStatusCallbackView(APIView):
    """Twilio's status callback for one channel, signed; a bad signature is a 403 and no
    change. The channel's URL sets which parameters carry the SID and status and which
    map turns Twilio's statuses into Beacon's: messages (SMS, WhatsApp) report
    MessageStatus, calls CallStatus with CallDuration and AnsweredBy."""

    permission_classes = [permissions.AllowAny]
    authentication_classes = []
    parser_classes = [parsers.FormParser]

    channel: str = Channel.SMS
    status_map: dict = TWILIO_STATUS_MAP
    sid_param = "MessageSid"
    status_params: tuple[str, ...] = ("MessageStatus", "SmsStatus")
    payload_params: tuple[str, ...] = ("MessageSid", "MessageStatus", "ErrorCode")
    # Said on a failure that carries no ErrorCode (a call that was busy or not answered).
    failure_prefix = ""

    @extend_schema(request=None, responses={204: None, 403: dict})
    def post(self, request):
        # A message sent through the account's own Twilio record is signed with its token.
        credentials = record_credentials(delivery_id=request.query_params.get("delivery", ""))
        try:
            params = twilio_params(request, credentials.get("auth_token") if credentials is not None else None)
        except WebhookSignatureInvalid:
            return invalid_signature()
        raw_status = next((params[key] for key in self.status_params if params.get(key)), "")
        new_status = self.status_map.get(raw_status)
        delivery = delivery_for_callback(
            channel=self.channel,
            delivery_id=request.query_params.get("delivery", ""),
            provider_message_id=params.get(self.sid_param, ""),
        )
        if delivery is not None and new_status:
            error_code = params.get("ErrorCode") or ""
            if error_code:
                error_message = f"Twilio error {error_code}"
            elif new_status in {"undelivered", "failed"} and self.failure_prefix:
                error_message = f"{self.failure_prefix} {raw_status}"
            else:
                error_message = ""
            delivery_track(
                delivery=delivery,
                status=new_status,
                source="twilio",
                payload={key: params[key] for key in self.payload_params if params.get(key)},
                error_code=error_code,
                error_message=error_message,
            )
        return Response(status=status.HTTP_204_NO_CONTENT)


def twilio_status_callback_view(channel: str):
    """The status callback view for one of Twilio's channels."""
    if channel == Channel.VOICE:
        return TwilioStatusCallbackView.as_view(
            channel=channel,
            status_map=TWILIO_CALL_STATUS_MAP,
            sid_param="CallSid",
            status_params=("CallStatus",),
            payload_params=("CallSid", "CallStatus", "CallDuration", "AnsweredBy", "ErrorCode"),
            failure_prefix="Twilio call status",
        )
    return TwilioStatusCallbackView.as_view(channel=channel)


EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


class SmsInboundView(APIView):
    """Twilio's incoming-message webhook for the platform number, signed like the status
    callback. STOP and START keywords change the sender's suppression for every account
    that has the number as a recipient. The answer is empty TwiML: Twilio's Advanced
    Opt-Out sends the confirmation reply itself."""

    permission_classes = [permissions.AllowAny]
    authentication_classes = []
    parser_classes = [parsers.FormParser]

    @extend_schema(request=None, responses={(200, "text/xml"): OpenApiTypes.STR, 403: dict})
    def post(self, request):
        try:
            params = twilio_params(request)
        except WebhookSignatureInvalid:
            return invalid_signature()
        sms_inbound(
            from_=params.get("From") or "", body=params.get("Body") or "", opt_out_type=params.get("OptOutType") or ""
        )
        return HttpResponse(EMPTY_TWIML, content_type="text/xml")


def _esp_webhook_guard(view):
    """django-anymail's webhook views, with Beacon's rules: refused (403, no change) until
    ANYMAIL_WEBHOOK_SECRET is set, and a bad secret or ESP signature is a 403 too."""

    @functools.wraps(view)
    def guarded(request, *args, **kwargs):
        if not settings.ANYMAIL.get("WEBHOOK_SECRET"):
            return JsonResponse(
                {"message": "ESP webhooks are disabled until ANYMAIL_WEBHOOK_SECRET is set.", "errors": {}}, status=403
            )
        try:
            return view(request, *args, **kwargs)
        except AnymailWebhookValidationFailure:
            return JsonResponse({"message": "Invalid webhook credentials or signature.", "errors": {}}, status=403)

    return guarded


def esp_webhook_urlpatterns() -> list[URLPattern]:
    return [
        URLPattern(pattern.pattern, _esp_webhook_guard(pattern.callback), pattern.default_args, pattern.name)
        for pattern in anymail.urls.urlpatterns
    ]
