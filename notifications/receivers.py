"""django-anymail's tracking signal: ESP events, already signature-checked by anymail's
webhook views, become delivery status changes; hard bounces and spam complaints also
suppress the address."""

from anymail.signals import tracking
from django.dispatch import receiver

from providers.email import ANYMAIL_EVENT_MAP
from templates.models import Channel

from .selectors import delivery_for_callback
from .services import delivery_track
from .services.inbound import BOUNCED, COMPLAINED, esp_feedback_record

FEEDBACK_EVENTS = frozenset({BOUNCED, COMPLAINED})


@receiver(tracking, dispatch_uid="beacon-anymail-tracking")
def esp_tracking_event(sender, event, esp_name, **kwargs):
    status = ANYMAIL_EVENT_MAP.get(event.event_type)
    if status is None and event.event_type not in FEEDBACK_EVENTS:
        return
    delivery = delivery_for_callback(
        channel=Channel.EMAIL,
        delivery_id=(event.metadata or {}).get("beacon_delivery", ""),
        provider_message_id=event.message_id or "",
    )
    if delivery is None:
        return
    # Most ESPs (SendGrid among them) put the bounce reason in mta_response, not description.
    detail = event.description or event.mta_response or event.reject_reason or ""
    if status is not None:
        delivery_track(
            delivery=delivery,
            status=status,
            source=f"anymail:{esp_name}".lower()[:32],
            occurred_at=event.timestamp,
            payload={
                "event_type": event.event_type,
                "event_id": event.event_id or "",
                "reject_reason": event.reject_reason or "",
            },
            error_message=detail if status in ("failed", "bounced") else "",
        )
    if event.event_type in FEEDBACK_EVENTS:
        esp_feedback_record(
            delivery=delivery,
            event_type=event.event_type,
            esp_event=event.esp_event,
            detail=f"{esp_name}: {detail}" if detail else f"{esp_name} {event.event_type}",
        )
