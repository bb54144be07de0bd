"""Content events and moderation across two real server processes (Redis, PostgreSQL, SQS)."""

import asyncio

import pytest

from tests import factories
from tests.realtime.multiprocess import Peer, call

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def chat(start_server):
    issued = factories.tenant_with_key("acme", messages_per_second=100, max_sockets_per_user=1000)
    room = factories.room_for(issued).connection_id
    return issued, room, start_server(), start_server()


async def post(peer, room, body="hello"):
    await peer.send({"type": "send", "connection_id": room, "client_id": body, "body": body})
    return (await peer.expect("ack", client_id=body))["id"]


async def test_concurrent_reactions_from_two_servers_all_count(chat):
    """Twenty users on two servers react at once: each reaction is applied once, in one
    dense run of seqs, and the last event carries all twenty."""
    issued, room, first, second = chat
    ada = await Peer.open(first, factories.token_for(issued, user_id="ada"), room)
    message_id = await post(ada, room)
    fans = await asyncio.gather(
        *(
            Peer.open(
                first if n % 2 else second, factories.token_for(issued, user_id=f"fan{n}"), room
            )
            for n in range(20)
        )
    )
    react = {"type": "react", "connection_id": room, "message_id": message_id, "emoji": "👍"}
    for n, fan in enumerate(fans):
        await fan.send({**react, "client_id": f"r{n}"})
    acks = await asyncio.gather(*(fan.expect("ack") for fan in fans))
    seqs = sorted(ack["seq"] for ack in acks)
    assert seqs == list(range(seqs[0], seqs[0] + 20))

    seen = [await ada.expect("reaction") for _ in range(20)]
    assert [frame["seq"] for frame in seen] == seqs  # in room order, none missing
    assert seen[-1]["reactions"][0]["count"] == 20
    assert {frame["user"]["id"] for frame in seen} == {f"fan{n}" for n in range(20)}


async def test_a_moderator_mutes_a_user_on_another_server_at_once(chat):
    issued, room, first, second = chat
    ada = await Peer.open(first, factories.token_for(issued, user_id="ada"), room)
    tutor = await Peer.open(
        second, factories.token_for(issued, user_id="tutor", role="moderator"), room
    )
    await tutor.send(
        {
            "type": "moderate",
            "connection_id": room,
            "client_id": "m1",
            "action": "mute",
            "user_id": "ada",
            "seconds": 600,
            "reason": "spam",
        }
    )
    await tutor.expect("ack", client_id="m1")
    event = await ada.expect("moderation")
    assert (event["action"], event["user"], event["reason"]) == ("muted", {"id": "ada"}, "spam")
    assert event["by"]["id"] == "tutor" and event["until"]

    await ada.send({"type": "send", "connection_id": room, "client_id": "x", "body": "hi"})
    refused = await ada.expect("error")
    assert (refused["code"], refused["ref"]) == ("muted", "x")

    status, body = call(
        second,
        "POST",
        f"/connections/{room}/moderation",
        issued.api_key,
        {"action": "unmute", "user_id": "ada"},
    )
    assert status == 200 and body["seq"] == event["seq"] + 1
    assert (await ada.expect("moderation"))["action"] == "unmuted"
    assert await post(ada, room, "back")


async def test_a_ban_removes_the_user_everywhere_until_lifted(chat):
    issued, room, first, second = chat
    ada = await Peer.open(first, factories.token_for(issued, user_id="ada"), room)
    tutor = await Peer.open(
        second, factories.token_for(issued, user_id="tutor", role="moderator"), room
    )
    ban = {"type": "moderate", "connection_id": room, "action": "ban", "user_id": "ada"}
    await tutor.send({**ban, "client_id": "b1"})
    assert (await ada.expect("left"))["reason"] == "removed"
    await ada.send({"type": "join", "connection_id": room})
    assert (await ada.expect("error"))["code"] == "removed"

    status, state = call(second, "GET", f"/connections/{room}/moderation", issued.api_key)
    assert status == 200 and [b["user_id"] for b in state["bans"]] == ["ada"]
    assert state["bans"][0]["by"] == "tutor"

    await tutor.send({**ban, "action": "unban", "client_id": "b2"})
    await tutor.expect("ack", client_id="b2")
    await ada.send({"type": "join", "connection_id": room})
    assert (await ada.expect("joined"))["connection_id"] == room


async def test_members_cannot_moderate(chat):
    issued, room, first, _ = chat
    ada = await Peer.open(first, factories.token_for(issued, user_id="ada"), room)
    await ada.send(
        {
            "type": "moderate",
            "connection_id": room,
            "client_id": "m",
            "action": "kick",
            "user_id": "bob",
        }
    )
    refused = await ada.expect("error")
    assert (refused["code"], refused["ref"]) == ("forbidden", "m")


async def test_read_receipts_and_unread_counts_cross_servers(chat):
    issued, room, first, second = chat
    ada = await Peer.open(first, factories.token_for(issued, user_id="ada"), room)
    bob = await Peer.open(second, factories.token_for(issued, user_id="bob"), room)
    for n in range(3):
        await post(ada, room, f"m{n}")
    last = (await bob.expect("message", body="m2"))["seq"]

    await bob.send({"type": "read", "connection_id": room, "seq": last - 1})
    receipt = await ada.expect("read")
    assert (receipt["user"]["id"], receipt["seq"]) == ("bob", last - 1)
    status, counts = call(first, "GET", "/users/bob/unread", issued.api_key)
    assert status == 200
    assert counts["rooms"] == [{"connection_id": room, "unread": 1, "last_read_seq": last - 1}]
