from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from .serializers import AccountPreferenceSerializer
from .services import account_preference


class AccountPreferenceView(APIView):
    """The account's notification preferences, made with the defaults on first read.

    PUT and PATCH both update only the fields they are given and keep the others: the
    booking frontends send the whole object, but a client that sends part of it changes
    only that part. Every field given is validated, and a bad one is a 400 naming it.
    """

    @extend_schema(responses=AccountPreferenceSerializer)
    def get(self, request):
        return Response(AccountPreferenceSerializer(account_preference(account=request.user)).data)

    @extend_schema(request=AccountPreferenceSerializer, responses=AccountPreferenceSerializer)
    def put(self, request):
        return self._update(request)

    @extend_schema(request=AccountPreferenceSerializer, responses=AccountPreferenceSerializer)
    def patch(self, request):
        return self._update(request)

    def _update(self, request):
        serializer = AccountPreferenceSerializer(
            account_preference(account=request.user), data=request.data, partial=True
        )
        serializer.is_valid(raise_exception=True)
        serializer.save()
        return Response(serializer.data)
