"""Rows deleted with their room or tenant (CASCADE) take their S3 objects along.

Messages delete their attachments through services.delete_objects, which keeps
the rows (status deleted); this catches the cascades, once the transaction
commits, best effort (a failure is logged; the bucket's lifecycle, if set, and
nothing else would remove such an object later: docs/attachments.md).
"""

from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from chatsvc.attachments.models import Attachment

_LIVE = (Attachment.Status.PENDING, Attachment.Status.ATTACHED)


@receiver(post_delete, sender=Attachment, dispatch_uid="attachments-delete-object")
def _delete_object(sender, instance: Attachment, **kwargs):
    if instance.status not in _LIVE:
        return  # its object is gone already
    from chatsvc.attachments.services import delete_keys_quietly

    key = instance.key
    transaction.on_commit(lambda: delete_keys_quietly([key]))
