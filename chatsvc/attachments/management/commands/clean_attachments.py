"""Periodic attachment housekeeping (docs/attachments.md#lifecycle); run it hourly.

1. Uploads granted but never sent (pending) for longer than
   CHAT_ATTACHMENT_PENDING_SECONDS (24 h): object deleted, row marked deleted.
2. Attachments older than their tenant's retention_days (0 keeps them): their
   messages have left history (DynamoDB TTL), so the objects go too.
3. Rows rejected or deleted more than --purge-days ago are removed.

Prints one JSON line with the counts. Safe to run concurrently with traffic
and with itself (each row changes state only from the state it was read in).
"""

import json
from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db.models import Q
from django.utils import timezone

from chatsvc.attachments.models import Attachment
from chatsvc.attachments.services import _delete_keys
from chatsvc.tenants.models import Tenant

BATCH = 500


class Command(BaseCommand):
    help = "Delete unclaimed uploads, attachments past their tenant's retention, old rows."

    def add_arguments(self, parser):
        parser.add_argument(
            "--pending-seconds",
            type=int,
            default=None,
            help="age of a never-sent upload to delete (default CHAT_ATTACHMENT_PENDING_SECONDS)",
        )
        parser.add_argument(
            "--purge-days", type=int, default=30, help="keep rejected/deleted rows this long"
        )

    def handle(self, *args, pending_seconds, purge_days, **options):
        now = timezone.now()
        pending_seconds = pending_seconds or settings.CHAT_ATTACHMENT_PENDING_SECONDS
        stale = Q(
            status=Attachment.Status.PENDING,
            created_at__lt=now - timedelta(seconds=pending_seconds),
        )
        counts = {"stale_pending": self._expire(stale, Attachment.Status.PENDING)}
        expired = 0
        for tenant in Tenant.objects.filter(retention_days__gt=0).only("id", "retention_days"):
            cutoff = now - timedelta(days=tenant.retention_days)
            expired += self._expire(
                Q(tenant_id=tenant.id, status=Attachment.Status.ATTACHED, attached_at__lt=cutoff),
                Attachment.Status.ATTACHED,
            )
        counts["past_retention"] = expired
        purged, _ = Attachment.objects.filter(
            status__in=[Attachment.Status.REJECTED, Attachment.Status.DELETED],
            created_at__lt=now - timedelta(days=purge_days),
        ).delete()
        counts["rows_purged"] = purged
        self.stdout.write(json.dumps(counts))

    def _expire(self, condition: Q, status: str) -> int:
        done = 0
        while True:
            rows = list(Attachment.objects.filter(condition).values_list("pk", "key")[:BATCH])
            if not rows:
                return done
            _delete_keys([key for _, key in rows])
            # Only rows still in `status`: one claimed meanwhile is not marked deleted
            # here (its object is gone; its message shows a broken link, as an
            # expired pending upload should never be claimed that late anyway).
            done += Attachment.objects.filter(pk__in=[pk for pk, _ in rows], status=status).update(
                status=Attachment.Status.DELETED
            )
            if len(rows) < BATCH:
                return done
