from rest_framework import serializers

from accounts.inputs import JSONObjectField

from .models import Category, Channel, Template, TemplateType, TemplateVersion


class TemplateContentSerializer(serializers.Serializer):
    channel = serializers.ChoiceField(choices=Channel.choices)
    locale = serializers.CharField(max_length=16, required=False, allow_blank=True, default="")
    subject = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    body = serializers.CharField(trim_whitespace=False)
    html_body = serializers.CharField(required=False, allow_blank=True, default="", trim_whitespace=False)
    options = JSONObjectField(
        required=False,
        default=dict,
        help_text="Push only: image_url, action_url, data (texts), silent, android, apns, webpush.",
    )


class TemplateWriteSerializer(serializers.Serializer):
    key = serializers.SlugField(max_length=100)
    name = serializers.CharField(max_length=200)
    template_type = serializers.ChoiceField(choices=TemplateType.choices, default=TemplateType.CUSTOM)
    category = serializers.ChoiceField(choices=Category.choices, default=Category.TRANSACTIONAL)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    is_active = serializers.BooleanField(required=False, default=True)
    required_placeholders = serializers.ListField(
        child=serializers.RegexField(r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=100), required=False, default=list
    )
    defaults = JSONObjectField(
        required=False,
        default=dict,
        help_text='Fallbacks for optional placeholders: a text, or texts by locale ({"": "your host", "es": "tu anfitrión"}).',
    )
    sample_context = JSONObjectField(required=False, default=dict)
    contents = TemplateContentSerializer(many=True, allow_empty=False)


class TemplateVersionSerializer(serializers.ModelSerializer):
    contents = TemplateContentSerializer(many=True, read_only=True)

    class Meta:
        model = TemplateVersion
        fields = [
            "id",
            "number",
            "note",
            "required_placeholders",
            "defaults",
            "sample_context",
            "contents",
            "created_at",
        ]


class TemplateSerializer(serializers.ModelSerializer):
    version = serializers.IntegerField(source="current_version.number", read_only=True)
    is_system = serializers.BooleanField(read_only=True)
    required_placeholders = serializers.JSONField(source="current_version.required_placeholders", read_only=True)
    defaults = serializers.JSONField(source="current_version.defaults", read_only=True)
    sample_context = serializers.JSONField(source="current_version.sample_context", read_only=True)
    contents = TemplateContentSerializer(source="current_version.contents.all", many=True, read_only=True)

    class Meta:
        model = Template
        fields = [
            "id",
            "key",
            "name",
            "template_type",
            "category",
            "description",
            "is_active",
            "is_system",
            "version",
            "required_placeholders",
            "defaults",
            "sample_context",
            "contents",
            "created_at",
            "updated_at",
        ]


class TemplatePreviewSerializer(serializers.Serializer):
    channel = serializers.ChoiceField(choices=Channel.choices)
    locale = serializers.CharField(max_length=16, required=False, allow_blank=True, default="")
    context = JSONObjectField(required=False, default=dict)
    version = serializers.IntegerField(required=False, min_value=1)


class RenderedSerializer(serializers.Serializer):
    channel = serializers.CharField()
    locale = serializers.CharField()
    version = serializers.IntegerField()
    subject = serializers.CharField()
    body = serializers.CharField()
    html_body = serializers.CharField()
    filled_defaults = serializers.ListField(child=serializers.CharField())
    encoding = serializers.CharField()
    segments = serializers.IntegerField()
    options = serializers.DictField()


class TemplateRestoreSerializer(serializers.Serializer):
    version = serializers.IntegerField(min_value=1)
