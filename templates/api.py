from dataclasses import asdict

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from .models import Template
from .rendering import RenderError
from .selectors import template_list, template_versions
from .serializers import (
    RenderedSerializer,
    TemplatePreviewSerializer,
    TemplateRestoreSerializer,
    TemplateSerializer,
    TemplateVersionSerializer,
    TemplateWriteSerializer,
)
from .services import template_archive, template_create, template_render, template_restore, template_update

UUID_PATTERN = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"


class TemplateViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Message templates: the account's own and the read-only system defaults."""

    serializer_class = TemplateSerializer
    lookup_value_regex = UUID_PATTERN
    filterset_fields = ["key", "template_type", "category", "is_active"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Template.objects.none()
        return template_list(account=self.request.user)

    def _owned(self) -> Template:
        template = self.get_object()
        if template.is_system:
            raise exceptions.PermissionDenied(
                "System templates are read-only; create a template with the same key to override it."
            )
        return template

    @extend_schema(request=TemplateWriteSerializer, responses={201: TemplateSerializer})
    def create(self, request):
        serializer = TemplateWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        template = template_create(account=request.user, created_by=request.user, **serializer.validated_data)
        return Response(self._output(template), status=status.HTTP_201_CREATED)

    @extend_schema(request=TemplateWriteSerializer, responses=TemplateSerializer)
    def update(self, request, pk=None):
        return self._update(request, partial=False)

    @extend_schema(request=TemplateWriteSerializer, responses=TemplateSerializer)
    def partial_update(self, request, pk=None):
        return self._update(request, partial=True)

    def _update(self, request, *, partial: bool):
        template = self._owned()
        serializer = TemplateWriteSerializer(data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        template = template_update(template=template, updated_by=request.user, **serializer.validated_data)
        return Response(self._output(template))

    def destroy(self, request, pk=None):
        template_archive(template=self._owned())
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _output(self, template: Template) -> dict:
        return TemplateSerializer(template_list(account=self.request.user).get(pk=template.pk)).data

    @extend_schema(request=TemplatePreviewSerializer, responses=RenderedSerializer)
    @action(detail=True, methods=["post"])
    def preview(self, request, pk=None):
        """Render with the given context over the template's sample data; nothing is sent."""
        template = self.get_object()
        serializer = TemplatePreviewSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        version = template.current_version
        if "version" in data:
            version = template.versions.filter(number=data["version"]).first()
            if version is None:
                raise exceptions.ValidationError({"version": [f"Template has no version {data['version']}."]})
        try:
            rendered = template_render(
                version=version,
                channel=data["channel"],
                locale=data["locale"],
                context={**version.sample_context, **data["context"]},
            )
        except RenderError as exc:
            raise exceptions.ValidationError(exc.errors) from None
        return Response({**asdict(rendered), "version": version.number})

    @extend_schema(responses=TemplateVersionSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=None)
    def versions(self, request, pk=None):
        template = self.get_object()
        return Response(TemplateVersionSerializer(template_versions(template=template), many=True).data)

    @extend_schema(request=TemplateRestoreSerializer, responses=TemplateSerializer)
    @action(detail=True, methods=["post"])
    def restore(self, request, pk=None):
        """Make an older version live again (as a new version)."""
        template = self._owned()
        serializer = TemplateRestoreSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        template_restore(template=template, number=serializer.validated_data["version"], restored_by=request.user)
        return Response(self._output(template))
