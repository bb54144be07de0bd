"""Edits, deletions, reactions and moderation on the demo page, in headless Chromium.

The pages run under the service's real Content-Security-Policy (no bypass): the
page module's controls and its injected stylesheet must work there.
"""

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.test_reference_client import say

pytestmark = pytest.mark.e2e

WAIT = 15000


def open_demo(browser, base_url: str, name: str, *, moderator: bool = False):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors
    suffix = "&moderator=1" if moderator else ""
    page.goto(f"{base_url}/demo/?name={name}{suffix}")
    expect(page.locator("#status")).to_have_text("connected", timeout=WAIT)
    return page


def entry(page, text: str):
    """The .chat-entry of the message whose line contains `text`."""
    return page.locator(".chat-entry").filter(has=page.locator("p.message", has_text=text))


def lines(page):
    return page.locator("#messages .message")


def chip(page, text: str, emoji: str):
    return entry(page, text).locator(f'.chat-chip[data-emoji="{emoji}"]')


def react_from_palette(page, text: str, emoji: str) -> None:
    message = entry(page, text)
    message.get_by_role("button", name=re.compile("^Add a reaction")).click()
    message.get_by_role("button", name=f"React with {emoji}").click()


def test_edits_deletions_and_reactions_show_live_and_from_history(local_service, browser, tmp_path):
    ada = open_demo(browser, local_service, "Ada")
    bob = open_demo(browser, local_service, "Bob")
    say(ada, "helo")
    say(ada, "to be deleted")
    say(bob, "hi Ada")
    for page in (ada, bob):
        expect(lines(page)).to_have_text(
            ["Ada: helo", "Ada: to be deleted", "Bob: hi Ada"], timeout=WAIT
        )
    # Edit and Delete are offered on one's own messages only.
    theirs = entry(bob, "Ada: helo")
    expect(theirs.get_by_role("button", name="Edit your message")).to_have_count(0)
    expect(theirs.get_by_role("button", name=re.compile("Delete"))).to_have_count(0)

    # Ada edits her first message: Bob sees the new body, marked edited.
    entry(ada, "Ada: helo").get_by_role("button", name="Edit your message").click()
    editor = ada.get_by_role("textbox", name="Edit your message")
    expect(editor).to_have_value("helo")
    editor.fill("hello")
    editor.press("Enter")
    for page in (ada, bob):
        expect(lines(page).first).to_have_text("Ada: hello (edited)", timeout=WAIT)

    # Ada deletes her second (two clicks: the first arms the button).
    delete = entry(ada, "to be deleted").get_by_role("button", name="Delete your message")
    delete.click()
    ada.get_by_role("button", name="Confirm: Delete your message").click()
    for page in (ada, bob):
        expect(lines(page)).to_have_text(
            ["Ada: hello (edited)", "message deleted", "Bob: hi Ada"], timeout=WAIT
        )

    # Reactions: Bob adds 👍 from the palette, Ada joins by clicking the chip; counts on both.
    react_from_palette(bob, "Ada: hello", "👍")
    for page in (ada, bob):
        expect(chip(page, "Ada: hello", "👍")).to_have_text("👍 1", timeout=WAIT)
    expect(chip(bob, "Ada: hello", "👍")).to_have_attribute("aria-pressed", "true")
    expect(chip(ada, "Ada: hello", "👍")).to_have_attribute("aria-pressed", "false")
    chip(ada, "Ada: hello", "👍").click()
    for page in (ada, bob):
        expect(chip(page, "Ada: hello", "👍")).to_have_text("👍 2", timeout=WAIT)
    expect(chip(ada, "Ada: hello", "👍")).to_have_attribute("aria-pressed", "true")
    react_from_palette(ada, "Bob: hi Ada", "🎉")
    react_from_palette(bob, "Bob: hi Ada", "❤️")
    chip(bob, "Ada: hello", "👍").click()  # Bob takes his back
    for page in (ada, bob):
        expect(chip(page, "Ada: hello", "👍")).to_have_text("👍 1", timeout=WAIT)
        expect(entry(page, "Bob: hi Ada").locator(".chat-chip")).to_have_text(
            ["🎉 1", "❤️ 1"], timeout=WAIT
        )
    # A deleted message offers nothing.
    expect(entry(ada, "message deleted").get_by_role("button")).to_have_count(0)

    # A late joiner and a reload both see the room as it is now, from history.
    carol = open_demo(browser, local_service, "Carol")
    bob.reload()
    expect(bob.locator("#status")).to_have_text("connected", timeout=WAIT)
    for page in (carol, bob):
        expect(lines(page)).to_have_text(
            ["Ada: hello (edited)", "message deleted", "Bob: hi Ada"], timeout=WAIT
        )
        expect(chip(page, "Ada: hello", "👍")).to_have_text("👍 1")
        expect(entry(page, "Bob: hi Ada").locator(".chat-chip")).to_have_text(["🎉 1", "❤️ 1"])
    # Carol's reaction reaches the others: the reloaded page still counts seq right.
    chip(carol, "Ada: hello", "👍").click()
    for page in (ada, bob, carol):
        expect(chip(page, "Ada: hello", "👍")).to_have_text("👍 2", timeout=WAIT)
    say(carol, "after")
    for page in (ada, bob, carol):
        expect(lines(page).last).to_have_text("Carol: after", timeout=WAIT)
        expect(page.locator("#events .chat-refused")).to_have_count(0)
        assert not page.locator("#events").get_by_text("could not be loaded").count()
        assert page.errors == []

    path = tmp_path / "content-ada.png"
    ada.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def test_a_moderator_deletes_others_messages_and_mutes(local_service, browser, tmp_path):
    ada = open_demo(browser, local_service, "Ada")
    bob = open_demo(browser, local_service, "Bob")
    tutor = open_demo(browser, local_service, "Tutor", moderator=True)
    expect(tutor.locator("#role")).to_have_text("moderator")
    say(bob, "spam spam")
    say(ada, "a question")
    for page in (ada, bob, tutor):
        expect(lines(page)).to_have_text(["Bob: spam spam", "Ada: a question"], timeout=WAIT)
    # Members cannot delete others' messages; the moderator can delete any.
    delete = entry(ada, "Bob: spam").get_by_role("button", name=re.compile("Delete"))
    expect(delete).to_have_count(0)
    entry(tutor, "Bob: spam").get_by_role("button", name="Delete Bob's message").click()
    tutor.get_by_role("button", name="Confirm: Delete Bob's message").click()
    for page in (ada, bob, tutor):
        expect(lines(page)).to_have_text(
            ["message deleted by Tutor", "Ada: a question"], timeout=WAIT
        )

    # Mute: everyone is told, and Bob's next message is refused with a clear notice.
    say(bob, "more spam")
    expect(lines(tutor).last).to_have_text("Bob: more spam", timeout=WAIT)
    entry(tutor, "Bob: more spam").get_by_role("button", name="Mute Bob for 10 min").click()
    notices = {
        ada: "Bob was muted for 10 min by Tutor.",
        bob: "You were muted for 10 min by Tutor.",
    }
    for page, notice in notices.items():
        expect(page.locator("#events")).to_contain_text(notice, timeout=WAIT)
    expect(tutor.locator("#events")).to_contain_text("Bob was muted for 10 min by you.")
    say(bob, "can you hear me")
    refused = bob.locator("#events .chat-refused", has_text="Message not sent")
    expect(refused).to_contain_text("muted", timeout=WAIT)
    expect(bob.locator("#pending")).to_have_text("")
    react_from_palette(bob, "Ada: a question", "❓")
    expect(bob.locator("#events .chat-refused", has_text="Reaction refused")).to_have_count(
        1, timeout=WAIT
    )
    expect(lines(ada)).to_have_count(3)  # "can you hear me" never arrived
    for page in (ada, bob, tutor):
        assert page.errors == []

    path = tmp_path / "content-moderation.png"
    bob.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
