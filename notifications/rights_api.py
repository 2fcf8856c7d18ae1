"""A recipient's data rights, under /api/v1/recipients/{external_id}/: the export of
everything held on the account's recipient with that external id, and its erasure.
Another account's recipient, or none, is a 404."""

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from .services.rights import RecipientNotFound, recipient_erase, recipient_export

NOT_FOUND = "The account has no recipient with this external id."


class RecipientExportSerializer(serializers.Serializer):
    """Everything Beacon holds on one recipient, at the time of the export."""

    exported_at = serializers.DateTimeField()
    recipient = serializers.DictField(help_text="external_id, name, email, phone, timezone, locale, created_at.")
    preferences = serializers.DictField(allow_null=True, help_text="Preferred channel and quiet hours; null if none.")
    opt_outs = serializers.ListField(child=serializers.DictField())
    consent = serializers.ListField(child=serializers.DictField(), help_text="The consent ledger, oldest first.")
    suppressions = serializers.ListField(child=serializers.DictField(), help_text="Suppressions of their addresses.")
    notifications = serializers.ListField(
        child=serializers.DictField(), help_text="Each with its deliveries (to, status, content, times) and events."
    )
    schedules = serializers.ListField(child=serializers.DictField())
    bookings = serializers.ListField(child=serializers.DictField(), help_text="Bookings they are the invitee of.")
    devices = serializers.ListField(child=serializers.DictField(), help_text="Push devices registered for them.")


class RecipientExportView(APIView):
    """Everything Beacon holds on the recipient, as JSON."""

    @extend_schema(responses={200: RecipientExportSerializer})
    def get(self, request, external_id):
        try:
            export = recipient_export(account=request.user, external_id=external_id)
        except RecipientNotFound:
            raise exceptions.NotFound(NOT_FOUND) from None
        return Response(export)


class RecipientView(APIView):
    """DELETE erases the recipient: their deliveries' addresses and content, notification
    context and event payloads are blanked (the anonymised logs stay), their preferences,
    consent records, push devices and pending schedules are deleted and deliveries still waiting are
    cancelled. Suppressions of their addresses stay, keyed by a hash of the address only,
    so that an address that said STOP stays unreachable."""

    @extend_schema(request=None, responses={204: None})
    def delete(self, request, external_id):
        try:
            recipient_erase(account=request.user, external_id=external_id)
        except RecipientNotFound:
            raise exceptions.NotFound(NOT_FOUND) from None
        return Response(status=status.HTTP_204_NO_CONTENT)
