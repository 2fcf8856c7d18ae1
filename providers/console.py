import logging
import uuid

from .base import OutboundMessage, Provider, SendResult
from .channels import CHANNELS

logger = logging.getLogger("beacon.console")


class ConsoleProvider(Provider):
    """Writes each message to the log instead of sending it: for development."""

    kind = "console"
    channels = tuple(CHANNELS)  # a universal kind: every channel of the spec

    def post_request(self, message: OutboundMessage) -> SendResult:
        logger.info("console %s to=%s subject=%r body=%r", message.channel, message.to, message.subject, message.body)
        return SendResult(provider_message_id=f"console-{uuid.uuid4().hex}", status="sent")
