"""chatsvc as an LTI 1.3 tool: which tenant a platform registration belongs to,
the room each course (or resource link) chats in, and the nonces already used.

The platform registrations themselves (issuer, client id, URLs, deployments,
the tool's key pairs) are django-lti's models (`lti_tool`); these add what
chatsvc needs on top of them.
"""

from urllib.parse import urlsplit

from django.db import models
from lti_tool.models import LtiRegistration

from chatsvc.rooms.models import Room
from chatsvc.tenants.models import Tenant


def origin_of(url: str) -> str | None:
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


class Platform(models.Model):
    """A platform registration's place in chatsvc: its tenant and room rules."""

    registration = models.OneToOneField(
        LtiRegistration, on_delete=models.CASCADE, related_name="chatsvc"
    )
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="lti_platforms")
    room_per_resource_link = models.BooleanField(
        default=False,
        help_text="One room per resource link (each chat placed in a course is its own "
        "room). Off: one room per course (context), shared by all its links.",
    )
    frame_origins = models.TextField(
        blank=True,
        help_text="Origins of the LMS pages that embed the chat (iframe), one per line, "
        "e.g. https://school.instructure.com. Empty: the origins of the issuer and of "
        "the auth login URL.",
    )

    class Meta:
        verbose_name = "chatsvc tenant"

    def __str__(self) -> str:
        return f"{self.registration} → {self.tenant}"

    @property
    def allowed_frame_origins(self) -> list[str]:
        listed = [line.strip().rstrip("/") for line in self.frame_origins.splitlines()]
        listed = [origin for origin in listed if origin]
        if listed:
            return listed
        guessed = [origin_of(self.registration.issuer), origin_of(self.registration.auth_url)]
        return list(dict.fromkeys(origin for origin in guessed if origin))


class CourseRoom(models.Model):
    """The room of one course context (and resource link, when the platform asks for it)."""

    platform = models.ForeignKey(Platform, on_delete=models.CASCADE, related_name="rooms")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="lti_rooms")
    deployment_id = models.CharField(max_length=255)
    context_id = models.CharField(max_length=255, blank=True)
    resource_link_id = models.CharField(
        max_length=255, blank=True, help_text="Empty: the room is the whole course's."
    )
    room = models.OneToOneField(Room, on_delete=models.CASCADE, related_name="lti_course")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["platform", "deployment_id", "context_id", "resource_link_id"],
                name="lti_one_room_per_context_and_link",
            )
        ]

    def __str__(self) -> str:
        return str(self.room)


class UsedNonce(models.Model):
    """An id_token nonce already launched with: a second launch with it is a replay."""

    issuer = models.CharField(max_length=255)
    nonce = models.CharField(max_length=255)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["issuer", "nonce"], name="lti_nonce_used_once")
        ]

    def __str__(self) -> str:
        return f"{self.issuer} {self.nonce}"
