"""GET /api/v1/connections: a tenant's rooms, newest first, paged, filtered."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chatsvc.rooms.models import Room
from chatsvc.rooms.selectors import rooms_of_tenant
from chatsvc.rooms.services import close_room, open_room
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme():
    return factories.tenant_with_key("acme")


@pytest.fixture
def listing(client, acme):
    def call(query="", key=None):
        response = client.get(
            f"/api/v1/connections{query}",
            headers={"Authorization": f"Bearer {key or acme.api_key}"},
        )
        return response

    return call


def ids(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [room["connection_id"] for room in response.json()["connections"]]


def test_pages_newest_first_until_next_is_null(listing, acme):
    made = [open_room(tenant=acme.tenant, title=f"r{i}").connection_id for i in range(5)]
    seen, query = [], "?limit=2"
    pages = 0
    while True:
        page = listing(query)
        seen += ids(page)
        pages += 1
        cursor = page.json()["next"]
        if cursor is None:
            break
        assert cursor == seen[-1]
        query = f"?limit=2&before={cursor}"
    assert seen == made[::-1] and pages == 3
    first = listing("?limit=1").json()["connections"][0]
    assert first == {
        "connection_id": made[-1],
        "title": "r4",
        "status": "open",
        "metadata": {},
        "created_at": first["created_at"],
        "closed_at": None,
    }
    assert listing("").json()["next"] is None  # default page (50) holds them all


def test_only_the_tenants_own_rooms(listing, acme):
    other = factories.tenant_with_key("other")
    foreign = open_room(tenant=other.tenant, metadata={"course_id": "42"})
    mine = open_room(tenant=acme.tenant, metadata={"course_id": "42"})
    assert ids(listing()) == [mine.connection_id]
    assert ids(listing("?metadata=course_id:42")) == [mine.connection_id]
    assert ids(listing(key=other.api_key)) == [foreign.connection_id]
    assert listing(key="csk_nope_nope").status_code == 401


def test_filter_by_status(listing, acme):
    shut = close_room(room=open_room(tenant=acme.tenant))
    live = open_room(tenant=acme.tenant)
    assert ids(listing("?status=open")) == [live.connection_id]
    assert ids(listing("?status=closed")) == [shut.connection_id]
    assert ids(listing()) == [live.connection_id, shut.connection_id]


def test_filter_by_metadata_key_and_value(listing, acme):
    def room(**metadata):
        return open_room(tenant=acme.tenant, metadata=metadata).connection_id

    text = room(course_id="42", term="2026")
    number = room(course_id=42, term="2025")
    room(course_id="420")
    room(course_id=[42])
    room(course_id={"id": 42})
    room(other="42")
    flag = room(archived=True)
    link = room(url="https://lms.example/c?id=1", **{"odd__key": "x"})

    assert set(ids(listing("?metadata=course_id:42"))) == {text, number}
    assert ids(listing("?metadata=course_id:42&metadata=term:2026")) == [text]
    assert ids(listing("?metadata=course_id:42&status=closed")) == []
    assert ids(listing("?metadata=archived:true")) == [flag]
    assert ids(listing("?metadata=url:https://lms.example/c%3Fid%3D1")) == [link]
    assert ids(listing("?metadata=odd__key:x")) == [link]
    assert ids(listing("?metadata=course_id:")) == []
    page = listing("?metadata=course_id:42&limit=1")
    assert ids(page) == [number] and page.json()["next"] == number
    assert ids(listing(f"?metadata=course_id:42&limit=1&before={number}")) == [text]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?before=nope", "before"),
        ("?status=archived", "status"),
        ("?metadata=no-colon", "metadata"),
        ("?" + "&".join(["metadata=a:b"] * 11), "metadata"),
    ],
)
def test_bad_queries_are_422_naming_the_parameter(listing, query, field):
    response = listing(query)
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["loc"][:2] == ["query", field]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL plans only")
def test_postgres_serves_the_metadata_filter_from_the_gin_index(acme):
    """The metadata filter is a jsonb @> (both spellings of the value) that the
    GIN index serves, not a scan of the tenant's rooms."""
    other = factories.tenant_with_key("other").tenant
    Room.objects.bulk_create(
        Room(tenant=tenant, status=status, metadata={"course_id": str(i)})
        for i in range(2000)
        for tenant, status in ((acme.tenant, "closed" if i % 10 else "open"), (other, "open"))
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE rooms_room")

    def plan(**filters) -> str:  # of the query the selector really runs
        with CaptureQueriesContext(connection) as queries:
            rooms_of_tenant(tenant_id=acme.tenant.id, limit=51, **filters)
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN " + queries.captured_queries[-1]["sql"])
            return "\n".join(row[0] for row in cursor.fetchall())

    assert "rooms_room_metadata_gin" in plan(metadata=[("course_id", "7")])


def test_a_metadata_filter_with_a_nul_is_a_422_not_a_500(listing):
    response = listing("?metadata=a:%00")
    assert response.status_code == 422
    assert "control characters" in response.content.decode()
