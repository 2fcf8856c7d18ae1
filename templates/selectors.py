import uuid

from django.db.models import Prefetch, Q, QuerySet

from .models import Template, TemplateContent, TemplateVersion


def template_list(*, account) -> QuerySet[Template]:
    """The account's templates and the system defaults, current content prefetched."""
    return (
        Template.objects.filter(Q(account=account) | Q(account__isnull=True))
        .select_related("current_version")
        .prefetch_related(Prefetch("current_version__contents", queryset=TemplateContent.objects.all()))
    )


def template_get(*, account, template_id) -> Template | None:
    return template_list(account=account).filter(pk=template_id).first()


def template_resolve(*, account, reference: str) -> Template | None:
    """A usable template by id or key; the account's own key wins over a system default.
    One query: its contents come from `version_contents`, cached per immutable version."""
    queryset = Template.objects.filter(Q(account=account) | Q(account__isnull=True), is_active=True).select_related(
        "current_version"
    )
    try:
        return queryset.filter(pk=uuid.UUID(str(reference))).first()
    except ValueError:
        pass
    candidates = list(queryset.filter(key=reference))
    candidates.sort(key=lambda t: t.account_id is None)
    return candidates[0] if candidates else None


def template_versions(*, template: Template) -> QuerySet[TemplateVersion]:
    return template.versions.prefetch_related("contents").order_by("-number")
