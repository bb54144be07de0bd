"""Role mapping, names, user ids and the room-per-context rules."""

import pytest

from chatsvc.lti import services
from chatsvc.lti.models import CourseRoom
from tests import factories
from tests.lti.conftest import register
from tests.lti.platform import CLAIM, FakePlatform

LIS = "http://purl.imsglobal.org/vocab/lis/v2/"


@pytest.mark.parametrize(
    ("roles", "expected"),
    [
        ([LIS + "membership#Instructor"], "moderator"),
        ([LIS + "membership/Instructor#TeachingAssistant"], "moderator"),
        ([LIS + "membership#TeachingAssistant"], "moderator"),
        ([LIS + "membership#Administrator"], "moderator"),
        ([LIS + "institution/person#Administrator"], "moderator"),
        ([LIS + "system/person#Administrator"], "moderator"),
        ([LIS + "system/person#SysAdmin"], "moderator"),
        (["Instructor"], "moderator"),  # simple context role names (deprecated, still sent)
        (["TeachingAssistant"], "moderator"),
        ([LIS + "membership#Learner"], "member"),
        ([LIS + "membership/Learner#Learner"], "member"),
        (["Learner"], "member"),
        ([LIS + "membership#Mentor"], "member"),
        ([LIS + "membership#ContentDeveloper"], "member"),
        # An instructor elsewhere in the institution is a learner in this course.
        ([LIS + "institution/person#Instructor", LIS + "membership#Learner"], "member"),
        ([LIS + "institution/person#Faculty"], "member"),
        ([LIS + "membership#Learner", LIS + "membership#Instructor"], "moderator"),
        ([], "member"),
        (None, "member"),
        ("Instructor", "member"),  # not a list: ignored
        ([42, None], "member"),
        (["http://example.com/roles#Instructor"], "member"),  # not the LIS vocabulary
    ],
)
def test_lms_roles_map_to_chat_roles(roles, expected):
    assert services.chat_role(roles) == expected


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({"sub": "1", "name": "Ada Lovelace", "given_name": "A"}, "Ada Lovelace"),
        ({"sub": "1", "given_name": "Ada", "family_name": "Lovelace"}, "Ada Lovelace"),
        ({"sub": "1", "given_name": "Ada"}, "Ada"),
        ({"sub": "1", "name": "  Ada \n Lovelace "}, "Ada Lovelace"),
        ({"sub": "1", "name": "x" * 300}, "x" * 200),
    ],
)
def test_display_name_from_the_launch_claims(claims, expected):
    assert services.display_name(claims) == expected


def test_a_launch_without_a_name_gets_a_stable_anonymous_one():
    name = services.display_name({"sub": "42"})
    assert name.startswith("Anonymous ") and name == services.display_name({"sub": "42"})
    assert name != services.display_name({"sub": "43"})


@pytest.fixture
def platform():
    return FakePlatform()  # its HTTP server is not started: only its claims are used


@pytest.fixture
def lms(db, platform):
    return register(platform, factories.tenant_with_key("rules"))


def test_user_ids_are_namespaced_by_registration_and_fit_a_chat_token(lms):
    assert services.chat_user_id(platform=lms, sub="2") == f"lti{lms.registration_id}:2"
    long_id = services.chat_user_id(platform=lms, sub="u" * 255)
    assert len(long_id) <= 128 and long_id.startswith(f"lti{lms.registration_id}:sha256:")


def claims(platform, *, context_id="course-101", link_id="link-1", user="teacher"):
    return platform.claims(user=user, nonce="n", context_id=context_id, link_id=link_id)


def test_one_room_per_course_created_on_first_launch_and_reused(lms, platform):
    first = services.room_for_launch(platform=lms, claims=claims(platform))
    again = services.room_for_launch(platform=lms, claims=claims(platform, user="student"))
    other_link = services.room_for_launch(platform=lms, claims=claims(platform, link_id="link-2"))
    other_course = services.room_for_launch(
        platform=lms, claims=claims(platform, context_id="course-202")
    )
    assert first == again == other_link
    assert other_course != first
    assert first.tenant == lms.tenant and first.is_open
    assert first.title == "Course course-101"
    assert first.metadata == {
        "source": "lti",
        "course_id": "course-101",
        "course_label": "COURSE-101",
        "course_title": "Course course-101",
        "resource_link_id": "",
        "resource_link_title": "",
        "lti_issuer": platform.issuer,
        "lti_client_id": platform.client_id,
        "lti_deployment_id": platform.deployment_id,
    }
    assert CourseRoom.objects.filter(platform=lms).count() == 2


def test_one_room_per_resource_link_when_the_registration_asks(lms, platform):
    lms.room_per_resource_link = True
    lms.save()
    first = services.room_for_launch(platform=lms, claims=claims(platform))
    again = services.room_for_launch(platform=lms, claims=claims(platform, user="student"))
    other_link = services.room_for_launch(platform=lms, claims=claims(platform, link_id="link-2"))
    assert first == again != other_link
    assert first.title == "Course course-101 — Course chat"
    assert first.metadata["resource_link_id"] == "link-1"


def test_a_launch_outside_any_course_gets_a_room_per_link(lms, platform):
    outside = claims(platform, context_id=None)
    room = services.room_for_launch(platform=lms, claims=outside)
    assert services.room_key(platform=lms, claims=outside).resource_link_id == "link-1"
    assert room.title == "Course chat"


def test_the_same_course_id_of_two_tenants_is_two_rooms(lms, platform):
    other = FakePlatform(client_id="other-client")
    other.issuer = "https://other-lms.example"
    other_lms = register(other, factories.tenant_with_key("other-school"))
    mine = services.room_for_launch(platform=lms, claims=claims(platform))
    theirs = services.room_for_launch(platform=other_lms, claims=claims(other))
    assert mine != theirs
    assert mine.tenant == lms.tenant and theirs.tenant == other_lms.tenant


def test_a_deployment_has_its_own_rooms(lms, platform):
    mine = services.room_for_launch(platform=lms, claims=claims(platform))
    elsewhere = claims(platform) | {CLAIM + "deployment_id": "dep-2"}
    assert services.room_for_launch(platform=lms, claims=elsewhere) != mine


def test_a_nonce_is_accepted_once_per_issuer(db):
    assert services.consume_nonce(issuer="https://a", nonce="n1", expires_at=None)
    assert not services.consume_nonce(issuer="https://a", nonce="n1", expires_at=None)
    assert services.consume_nonce(issuer="https://b", nonce="n1", expires_at=None)


def test_frame_origins_default_to_the_platforms_and_can_be_listed(lms, platform):
    assert lms.allowed_frame_origins == [platform.url]
    lms.frame_origins = "https://school.instructure.com/\n\nhttps://lms.example.edu"
    assert lms.allowed_frame_origins == [
        "https://school.instructure.com",
        "https://lms.example.edu",
    ]
