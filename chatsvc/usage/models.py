"""Per tenant and hour usage counters, written at the source (chatsvc.usage.recorder).

The tenant foreign keys have no database constraint: the worker counts
messages of a tenant that may have been deleted meanwhile, and one such
message must not fail the batch's statement. Deleting a tenant still deletes
its rows (Django's collector cascades, not the database).
"""

from django.db import models

from chatsvc.tenants.models import Tenant


class UsageHour(models.Model):
    """One tenant's counters for one UTC hour."""

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, db_constraint=False, db_index=False, related_name="+"
    )
    hour = models.DateTimeField(help_text="Start of the UTC hour.")
    messages = models.PositiveBigIntegerField(default=0)
    content_events = models.PositiveBigIntegerField(default=0)
    max_live_sockets = models.PositiveIntegerField(default=0)
    max_queue_lag_ms = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "hour"], name="usage_one_row_per_hour")
        ]
        # The unique index serves a tenant's page; this one the retention clean-up.
        indexes = [models.Index(fields=["hour"], name="usage_hour_idx")]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.hour:%Y-%m-%d %H}:00"


class UsageUser(models.Model):
    """A user who sent something in a bucket (an hour or a day): distinct counts at read time.

    `user_key` is a hash of the tenant and the token subject: a fixed-size key,
    and no second copy of the LMS's user ids.
    """

    HOUR = 1
    DAY = 24
    SPANS = [(HOUR, "hour"), (DAY, "day")]

    tenant = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, db_constraint=False, db_index=False, related_name="+"
    )
    span = models.PositiveSmallIntegerField(choices=SPANS)
    bucket = models.DateTimeField(help_text="Start of the UTC hour or day.")
    user_key = models.CharField(max_length=32)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "span", "bucket", "user_key"], name="usage_one_user_per_bucket"
            )
        ]
        indexes = [models.Index(fields=["span", "bucket"], name="usage_user_bucket_idx")]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.get_span_display()} {self.bucket:%Y-%m-%d %H}:00"
