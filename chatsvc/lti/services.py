"""What a validated launch means in chatsvc: the user, their role, their room."""

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from chatsvc.core.text import is_storable
from chatsvc.lti.models import CourseRoom, Platform, UsedNonce
from chatsvc.rooms.models import Room
from chatsvc.rooms.services import open_room

logger = logging.getLogger(__name__)

CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"
LIS = "http://purl.imsglobal.org/vocab/lis/v2/"
MODERATOR_CONTEXT_ROLES = frozenset({"Instructor", "TeachingAssistant", "Administrator"})
MODERATOR_SYSTEM_ROLES = frozenset({"Administrator", "SysAdmin"})
NAME_MAX = 200
SUB_MAX = 128
NONCE_MEMORY = timedelta(days=2)


def chat_role(roles: object) -> str:
    """LMS roles (the launch's roles claim) → `moderator` or `member`.

    Instructor, TeachingAssistant and Administrator of the course (context
    roles, also as sub-roles such as membership/Instructor#TeachingAssistant
    and as simple names), and institution or system administrators, moderate.
    Everything else (Learner, Mentor, ContentDeveloper, an institution-level
    Instructor who is a learner in this course, no roles at all) is a member.
    """
    if not isinstance(roles, list):
        return "member"
    for role in roles:
        if not isinstance(role, str):
            continue
        if "/" not in role and "#" not in role:  # simple name: a context role
            if role in MODERATOR_CONTEXT_ROLES:
                return "moderator"
            continue
        vocabulary, _, name = role.partition("#")
        if vocabulary == LIS + "membership" and name in MODERATOR_CONTEXT_ROLES:
            return "moderator"
        if vocabulary.startswith(LIS + "membership/"):  # sub-role: its principal decides
            principal = vocabulary.removeprefix(LIS + "membership/")
            if principal in MODERATOR_CONTEXT_ROLES or name in MODERATOR_CONTEXT_ROLES:
                return "moderator"
        if (
            vocabulary in (LIS + "institution/person", LIS + "system/person")
            and name in MODERATOR_SYSTEM_ROLES
        ):
            return "moderator"
    return "member"


def _clean(text: object, limit: int) -> str:
    if not isinstance(text, str):
        return ""
    text = " ".join(text.split())
    return text[:limit] if is_storable(text) else ""


def display_name(claims: dict) -> str:
    """`name`, else `given_name family_name`, else a stable anonymous label."""
    name = _clean(claims.get("name"), NAME_MAX)
    if not name:
        given = _clean(claims.get("given_name"), NAME_MAX)
        family = _clean(claims.get("family_name"), NAME_MAX)
        name = f"{given} {family}".strip()[:NAME_MAX]
    if not name:
        name = f"Anonymous {hashlib.sha256(str(claims.get('sub')).encode()).hexdigest()[:6]}"
    return name


def chat_user_id(*, platform: Platform, sub: str) -> str:
    """The chat user id: the platform's `sub`, prefixed by the registration.

    Two platforms of one tenant may both have a user "2" (Moodle's subs are
    small integers); the prefix keeps them apart. A `sub` too long for a
    chat token (128 characters) is replaced by its hash.
    """
    prefix = f"lti{platform.registration_id}:"
    if len(prefix) + len(sub) > SUB_MAX or not is_storable(sub):
        sub = "sha256:" + hashlib.sha256(sub.encode()).hexdigest()
    return prefix + sub


@dataclass(frozen=True)
class RoomKey:
    deployment_id: str
    context_id: str
    resource_link_id: str


def room_key(*, platform: Platform, claims: dict) -> RoomKey:
    """One room per course (context); per resource link when the platform asks for it
    or when the launch has no context (a link outside any course)."""
    context = claims.get(CLAIM + "context") or {}
    link = claims.get(CLAIM + "resource_link") or {}
    context_id = str(context.get("id") or "")
    link_id = str(link.get("id") or "")
    per_link = platform.room_per_resource_link or not context_id
    return RoomKey(
        deployment_id=str(claims.get(CLAIM + "deployment_id") or ""),
        context_id=context_id,
        resource_link_id=link_id if per_link else "",
    )


def _room_title(*, claims: dict, key: RoomKey) -> str:
    context = claims.get(CLAIM + "context") or {}
    link = claims.get(CLAIM + "resource_link") or {}
    course = _clean(context.get("title") or context.get("label"), 150)
    link_title = _clean(link.get("title"), 150)
    if key.resource_link_id and link_title:
        title = f"{course} — {link_title}" if course else link_title
    else:
        title = course or link_title or "LTI chat"
    return title[:200]


def _room_metadata(*, platform: Platform, claims: dict, key: RoomKey) -> dict:
    """Flat keys, so a tenant finds a course's room with the REST API's metadata filter."""
    context = claims.get(CLAIM + "context") or {}
    link = claims.get(CLAIM + "resource_link") or {}
    return {
        "source": "lti",
        "course_id": key.context_id,
        "course_label": _clean(context.get("label"), 200),
        "course_title": _clean(context.get("title"), 500),
        "resource_link_id": key.resource_link_id,
        "resource_link_title": _clean(link.get("title"), 500) if key.resource_link_id else "",
        "lti_issuer": platform.registration.issuer,
        "lti_client_id": platform.registration.client_id,
        "lti_deployment_id": key.deployment_id,
    }


def room_for_launch(*, platform: Platform, claims: dict) -> Room:
    """The launch's room: created on the first launch of its course (or link), reused after."""
    key = room_key(platform=platform, claims=claims)
    lookup = {
        "platform": platform,
        "deployment_id": key.deployment_id,
        "context_id": key.context_id,
        "resource_link_id": key.resource_link_id,
    }
    existing = CourseRoom.objects.select_related("room").filter(**lookup).first()
    if existing is not None and existing.room.tenant_id == platform.tenant_id:
        return existing.room
    if existing is not None:
        # The registration moved to another tenant: its courses get that tenant's
        # rooms (the old ones stay the old tenant's, untouched).
        existing.delete()
    try:
        with transaction.atomic():
            room = open_room(
                tenant=platform.tenant,
                title=_room_title(claims=claims, key=key),
                metadata=_room_metadata(platform=platform, claims=claims, key=key),
            )
            CourseRoom.objects.create(tenant=platform.tenant, room=room, **lookup)
            logger.info(
                "lti room created",
                extra={"connection_id": room.connection_id, "tenant": platform.tenant.slug},
            )
            return room
    except IntegrityError:  # another launch of the same course created it first
        return CourseRoom.objects.select_related("room").get(**lookup).room


def consume_nonce(*, issuer: str, nonce: str, expires_at: int) -> bool:
    """Record a launch's nonce; False if it was already used (a replay)."""
    now = timezone.now()
    # Kept while the login's nonce could still be accepted (pylti1p3 keeps it a
    # day) and while the id_token is unexpired, whichever is longer.
    keep_until = now + NONCE_MEMORY
    if isinstance(expires_at, int):
        keep_until = max(keep_until, datetime.fromtimestamp(expires_at, UTC))
    UsedNonce.objects.filter(expires_at__lt=now).delete()
    try:
        with transaction.atomic():
            UsedNonce.objects.create(issuer=issuer, nonce=nonce[:255], expires_at=keep_until)
    except IntegrityError:
        return False
    return True
