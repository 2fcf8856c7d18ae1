"""The admin of campaigns: their progress, and start / pause / resume / cancel with a
confirmation, through the same services as the API."""

from django.contrib import admin, messages
from django.utils.html import format_html

from accounts.admin_scoping import AccountScopedAdmin, action_confirmation

from .models import Campaign, CampaignVariant
from .services import (
    CampaignConflict,
    campaign_cancel,
    campaign_counts,
    campaign_pause,
    campaign_resume,
    campaign_start,
)


class VariantInline(admin.TabularInline):
    model = CampaignVariant
    fields = ("name", "template", "template_version", "subject", "split")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


def _bar(share: float | None) -> str:
    percent = 0 if share is None else round(share * 100, 1)
    return format_html(
        '<progress max="100" value="{}" style="width:8em"></progress> {}%',
        percent,
        percent,
    )


@admin.register(Campaign)
class CampaignAdmin(AccountScopedAdmin, admin.ModelAdmin):
    list_display = ("name", "status", "progress", "audience", "category", "created_at")
    list_filter = ("status", "category")
    search_fields = ("name", "account__username")
    list_select_related = ("audience", "account")
    inlines = [VariantInline]
    actions = ["start", "pause", "resume", "cancel"]
    readonly_fields = (
        "account",
        "status",
        "audience",
        "channels",
        "fallback",
        "category",
        "context",
        "scheduled_for",
        "local_send_time",
        "throttle_per_minute",
        "cursor",
        "counts",
        "started_at",
        "paused_at",
        "completed_at",
        "cancelled_at",
    )
    fields = ("name", *readonly_fields)

    def has_add_permission(self, request):
        # Created through the API (variants, templates pinned): the admin runs them.
        return False

    @admin.display(description="progress")
    def progress(self, campaign):
        reached = campaign.recipients.count()
        size = campaign.audience.member_count
        return _bar(reached / size if size else None)

    @admin.display(description="counts")
    def counts(self, campaign):
        counts = campaign_counts(campaign)
        statuses = ", ".join(f"{status} {n:,}" for status, n in counts["by_status"].items() if n)
        reasons = "; ".join(f"{row['reason']}: {row['count']:,}" for row in counts["skipped_reasons"])
        return format_html(
            "{}<br>{:,} of {:,} reached. Deliveries: {}<br>Skipped: {}",
            _bar(counts["progress"]),
            counts["recipients_reached"],
            counts["audience_size"],
            statuses or "none yet",
            reasons or "none",
        )

    def _act(self, request, queryset, *, verb: str, service, question: str):
        chosen = list(queryset)
        page = action_confirmation(
            self,
            request,
            chosen,
            action=verb,
            heading=f"{verb.capitalize()} campaigns",
            question=question,
            confirm=f"Yes, {verb} them",
            describe=lambda c: f"{c.name}: {c.status}, audience {c.audience}",
        )
        if page is not None:
            return page
        done, refused = 0, []
        for campaign in chosen:
            try:
                service(campaign)
                done += 1
            except CampaignConflict as exc:
                refused.append(f"{campaign.name}: {exc}")
        if done:
            self.message_user(request, f"{verb.capitalize()}: {done} campaign(s).", messages.SUCCESS)
        for line in refused:
            self.message_user(request, line, messages.WARNING)
        return None

    @admin.action(description="Start")
    def start(self, request, queryset):
        return self._act(
            request, queryset, verb="start", service=campaign_start, question="Start sending these campaigns?"
        )

    @admin.action(description="Pause")
    def pause(self, request, queryset):
        return self._act(
            request,
            queryset,
            verb="pause",
            service=campaign_pause,
            question="Pause these campaigns? Queued messages are held.",
        )

    @admin.action(description="Resume")
    def resume(self, request, queryset):
        return self._act(request, queryset, verb="resume", service=campaign_resume, question="Resume these campaigns?")

    @admin.action(description="Cancel")
    def cancel(self, request, queryset):
        return self._act(
            request,
            queryset,
            verb="cancel",
            service=campaign_cancel,
            question="Cancel these campaigns? What has not been sent is cancelled, for good.",
        )
