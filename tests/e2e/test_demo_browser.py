"""`run_local` as a user starts it, and two real headless Chromium pages chatting."""

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e


def test_two_browser_pages_chat_through_the_demo(local_service, browser):
    alice = browser.new_page()
    bob = browser.new_page()
    alice.goto(f"{local_service}/demo/?name=Alice")
    bob.goto(f"{local_service}/demo/?name=Bob")
    expect(alice.locator("#status")).to_have_text("connected", timeout=15000)
    expect(bob.locator("#status")).to_have_text("connected", timeout=15000)

    alice.fill("#body", "Hello from Alice")
    alice.click("#send")

    expect(bob.locator("#messages .message")).to_have_text(
        ["Alice: Hello from Alice"], timeout=10000
    )
    expect(alice.locator("#messages .message")).to_have_text(["Alice: Hello from Alice"])


def test_a_late_joiner_sees_earlier_messages_from_history(local_service, browser):
    alice = browser.new_page()
    alice.goto(f"{local_service}/demo/?name=Alice")
    expect(alice.locator("#status")).to_have_text("connected", timeout=15000)
    for text in ("first", "second"):
        alice.fill("#body", text)
        alice.click("#send")
    expect(alice.locator("#messages .message")).to_have_count(2)

    # The worker persists to DynamoDB in the background; history is eventually there.
    carol = browser.new_page()
    expected = ["Alice: first", "Alice: second"]
    for _ in range(20):
        carol.goto(f"{local_service}/demo/?name=Carol")
        expect(carol.locator("#status")).to_have_text("connected", timeout=15000)
        carol.wait_for_timeout(500)
        if carol.locator("#messages .message").all_inner_texts() == expected:
            break
    expect(carol.locator("#messages .message")).to_have_text(expected)
