import time
import uuid

from django.conf import settings
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


# (account id, reference) -> (monotonic expiry, template): every send names its template,
# so a process remembers what a name resolved to for BEACON_TEMPLATE_CACHE_SECONDS.
# A change through templates.services forgets at once in that process (and again on
# commit); other processes pick it up within that many seconds.
_resolved: dict[tuple, tuple[float, Template]] = {}
_CACHE_LIMIT = 10_000


def template_resolve(*, account, reference: str) -> Template | None:
    """A usable template by id or key; the account's own key wins over a system default.
    One query, or none when remembered: its contents come from `version_contents`, cached
    per immutable version."""
    key = (account.pk, reference)
    hit = _resolved.get(key)
    if hit is not None and hit[0] > time.monotonic():
        return hit[1]
    template = _template_resolve(account=account, reference=reference)
    if template is not None and settings.BEACON_TEMPLATE_CACHE_SECONDS > 0:
        if len(_resolved) >= _CACHE_LIMIT:
            _resolved.clear()
        _resolved[key] = (time.monotonic() + settings.BEACON_TEMPLATE_CACHE_SECONDS, template)
    return template


def templates_forget() -> None:
    """Forget what template names resolved to (a template changed)."""
    _resolved.clear()


def _template_resolve(*, account, reference: str) -> Template | None:
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
