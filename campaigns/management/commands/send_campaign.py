import sys

from django.core.management.base import BaseCommand, CommandError

from campaigns.models import Campaign, CampaignStatus
from campaigns.services import (
    CampaignConflict,
    campaign_counts,
    campaign_fan_out,
    campaign_preview,
    campaign_resume,
    campaign_start,
)


class Command(BaseCommand):
    help = (
        "Start a campaign (or resume a paused one) and fan it out here, with a progress bar; "
        "--dry-run counts who would be sent to after consent and suppression, writing nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("campaign_id", type=int)
        parser.add_argument("--dry-run", action="store_true")

    def handle(self, *args, campaign_id, dry_run, **options):
        campaign = Campaign.objects.filter(pk=campaign_id).select_related("audience").first()
        if campaign is None:
            raise CommandError(f"No campaign {campaign_id}.")
        if dry_run:
            preview = campaign_preview(campaign)
            self.stdout.write(
                f"{campaign.name}: {preview['would_send']:,} of {preview['audience']:,} would be sent to; "
                f"{preview['skipped']:,} skipped"
            )
            for row in preview["skipped_reasons"]:
                self.stdout.write(f"  {row['count']:>8,}  {row['reason']}")
            return
        try:
            if campaign.status == CampaignStatus.PAUSED:
                campaign = campaign_resume(campaign)
            elif campaign.status != CampaignStatus.RUNNING:
                campaign = campaign_start(campaign)
        except CampaignConflict as exc:
            raise CommandError(str(exc)) from None
        if campaign.status == CampaignStatus.SCHEDULED:
            self.stdout.write(f"{campaign.name}: scheduled for {campaign.scheduled_for.isoformat()}")
            return
        while True:
            result = campaign_fan_out(campaign.pk, seconds=1.0)
            counts = campaign_counts(campaign)
            self._bar(counts)
            if result.done or Campaign.objects.get(pk=campaign.pk).status != CampaignStatus.RUNNING:
                break
        campaign.refresh_from_db()
        self.stdout.write("")
        self.stdout.write(
            f"{campaign.name}: {campaign.status}; {counts['recipients_reached']:,} reached, {counts['skipped']:,} skipped"
        )

    def _bar(self, counts: dict) -> None:
        share = counts["progress"] or 0.0
        filled = int(share * 30)
        line = (
            f"\r[{'#' * filled}{'.' * (30 - filled)}] {share:6.1%}  "
            f"{counts['recipients_reached']:,}/{counts['audience_size']:,}  skipped {counts['skipped']:,}"
        )
        self.stdout.write(line, ending="")
        sys.stdout.flush()
