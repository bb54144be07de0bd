"""What clients see of a message after changes: edits, tombstones, reaction counts.

Shared by history (DynamoDB items overlaid with the room stream's newer
records) and the content rules (chatsvc.messaging.content).
"""

import json

SHOWN_REACTORS = 25  # user ids per emoji in frames and history; `count` has them all


def shown_reactions(reactions: list[dict], shown: int = SHOWN_REACTORS) -> list[dict]:
    """What clients see of a message's reactions: counts, and the first reactors."""
    return [
        {"emoji": r["emoji"], "count": len(r["user_ids"]), "user_ids": r["user_ids"][:shown]}
        for r in reactions
    ]


def toggle(
    reactions: list[dict], emoji: str, user_id: str, *, max_kinds: int, max_reactions: int
) -> bool:
    """Toggle `user_id`'s `emoji` in `reactions` (changed in place); whether it was added.

    Raises ValueError("too_many_kinds" / "too_many_reactions") when adding breaks a
    bound. The Redis stream's react.lua applies the same rules.
    """
    mine = next((r for r in reactions if r["emoji"] == emoji), None)
    if mine is not None and user_id in mine["user_ids"]:
        mine["user_ids"].remove(user_id)
        if not mine["user_ids"]:
            reactions.remove(mine)
        return False
    if mine is None and len(reactions) >= max_kinds:
        raise ValueError("too_many_kinds")
    if sum(len(r["user_ids"]) for r in reactions) >= max_reactions:
        raise ValueError("too_many_reactions")
    if mine is None:
        mine = {"emoji": emoji, "user_ids": []}
        reactions.append(mine)
    mine["user_ids"].append(user_id)
    return True


def overlay(message: dict, record: dict | None) -> dict:
    """`message` (a history entry, possibly stale) with the newer changes of its record."""
    stored_body_rev = message.pop("_body_rev", 0)
    stored_reactions_rev = message.pop("_reactions_rev", 0)
    if record is None:
        return message
    if int(record.get("body_rev", 0)) > stored_body_rev:
        if record.get("deleted") == "1":
            tombstone(message, record["deleted_at"], json.loads(record["deleted_by"]))
        elif "body" in record:
            message["body"] = record["body"]
            message["edited_at"] = record["edited_at"]
    if int(record.get("reactions_rev", 0)) > stored_reactions_rev and not message.get("deleted"):
        reactions = json.loads(record.get("reactions", "[]"))
        if reactions:
            message["reactions"] = shown_reactions(reactions)
        else:
            message.pop("reactions", None)
    return message


def tombstone(message: dict, deleted_at: str, deleted_by: dict | None) -> None:
    for name in ("body", "edited_at", "reactions", "attachments"):
        message.pop(name, None)
    message.update(deleted=True, deleted_at=deleted_at, deleted_by=deleted_by)
