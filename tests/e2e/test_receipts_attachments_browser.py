"""Read receipts and attachments on the demo page, in headless Chromium.

The pages run under the service's real Content-Security-Policy (no bypass): in local
mode the demo view adds the storage emulator's origin to connect-src (the upload's
POST) and img-src (thumbnails), and nothing else.
"""

import re
import struct
import zlib

import pytest
from playwright.sync_api import expect

from chatsvc.core.security_headers import CONTENT_SECURITY_POLICY
from chatsvc.demo.views import policy
from tests.e2e.test_reference_client import say

WAIT = 15000
X = "\N{MULTIPLICATION SIGN}"  # a chosen file's Remove button


def tiny_png(width: int = 40, height: int = 24) -> bytes:
    """A valid RGB PNG, red."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def directives(csp: str) -> dict[str, list[str]]:
    return {d.split()[0]: d.split()[1:] for d in csp.split("; ")}


def open_demo(browser, base_url: str, name: str):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # Every request the page makes must succeed (uploads, thumbnails), except the
    # browser's own favicon request (the demo has none).
    page.on(
        "response",
        lambda r: (
            errors.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico")
            else None
        ),
    )
    page.on("requestfailed", lambda r: errors.append(f"failed {r.url}: {r.failure}"))
    page.errors = errors
    response = page.goto(f"{base_url}/demo/?name={name}")
    page.csp = response.headers["content-security-policy"]
    expect(page.locator("#status")).to_have_text("connected", timeout=WAIT)
    return page


def entry(page, text: str):
    """The .chat-entry of the message whose line is exactly `text`."""
    line = page.locator("p.message", has_text=re.compile(f"^{re.escape(text)}$"))
    return page.locator(".chat-entry").filter(has=line)


def lines(page):
    return page.locator("#messages .message")


def attach(page, *paths) -> None:
    """Through the composer's button and the browser's file chooser."""
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name=re.compile("^Attach files")).click()
    chooser.value.set_files([str(path) for path in paths])


def thumbnail_width(page, text: str, name: str) -> int:
    """The image's natural width once it has loaded (decode() rejects if it cannot)."""
    image = entry(page, text).get_by_role("img", name=name)
    expect(image).to_be_visible(timeout=WAIT)
    return image.evaluate("(img) => img.decode().then(() => img.naturalWidth)")


def test_the_demo_policy_adds_the_storage_origin_to_connect_and_img_src_only():
    assert policy(None) == CONTENT_SECURITY_POLICY  # real S3: the service's policy
    assert policy("javascript:alert(1)") == CONTENT_SECURITY_POLICY
    local = directives(policy("http://127.0.0.1:5123/some/path"))
    service = directives(CONTENT_SECURITY_POLICY)
    assert local["connect-src"] == [*service["connect-src"], "http://127.0.0.1:5123"]
    assert local["img-src"] == [*service["img-src"], "http://127.0.0.1:5123"]
    others = {k: v for k, v in local.items() if k not in ("connect-src", "img-src")}
    assert others == {k: v for k, v in service.items() if k not in ("connect-src", "img-src")}


@pytest.mark.e2e
def test_receipts_and_attachments_on_the_demo_page(local_service, browser, tmp_path):
    ada = open_demo(browser, local_service, "Ada")
    bob = open_demo(browser, local_service, "Bob")
    # In local mode the page may reach the emulator (another origin), for uploads and images.
    csp = directives(ada.csp)
    storage = [s for s in csp["connect-src"] if s != "'self'"]
    assert len(storage) == 1 and storage[0].startswith("http://127.0.0.1:"), csp
    assert storage[0] in csp["img-src"]
    assert csp["script-src"] == ["'self'"] and csp["form-action"] == ["'self'"]

    # Receipts: Bob's page shows Ada's message and marks the room read; Ada sees it.
    say(ada, "hello Bob")
    expect(lines(bob)).to_have_text(["Ada: hello Bob"], timeout=WAIT)
    expect(entry(ada, "Ada: hello Bob").locator(".chat-seen")).to_have_text(
        "Seen by Bob", timeout=WAIT
    )
    expect(bob.locator(".chat-seen")).to_have_count(0)  # Bob has no message of his own

    # Ada attaches a PNG and a text file to one message: Bob sees the thumbnail (loaded)
    # and a download link with the name and size.
    png = tmp_path / "dot.png"
    png.write_bytes(tiny_png())
    notes = tmp_path / "notes.txt"
    notes.write_text("bring snacks\n")
    attach(ada, png, notes)
    size = png.stat().st_size
    chosen = [f"dot.png ({size} B){X}", f"notes.txt (13 B){X}"]
    expect(ada.locator("#attached li")).to_have_text(chosen)
    expect(ada.get_by_role("button", name="Attach files (2 chosen)")).to_be_visible()
    say(ada, "a dot")
    expect(ada.locator("#attached li")).to_have_count(0)
    for page in (ada, bob):
        assert thumbnail_width(page, "Ada: a dot", "dot.png") == 40
        link = entry(page, "Ada: a dot").get_by_role("link", name="notes.txt", exact=True)
        expect(link).to_have_attribute("href", re.compile(r"^http://127\.0\.0\.1:\d+/"))
        expect(entry(page, "Ada: a dot").locator(".chat-attachment").last).to_have_text(
            "📄 notes.txt (13 B)"
        )
    # The receipt follows Ada's newest message once Bob has seen it.
    expect(entry(ada, "Ada: a dot").locator(".chat-seen")).to_have_text("Seen by Bob", timeout=WAIT)
    expect(ada.locator(".chat-seen")).to_have_count(1)

    # A file whose bytes are not its declared type is refused when the message is sent.
    fake = tmp_path / "fake.png"
    fake.write_text("this is not a picture\n")
    attach(ada, fake)
    say(ada, "look at this")
    expect(ada.locator("#attach-error")).to_contain_text(
        re.compile(r"Message not sent: fake\.png: .*not the declared image/png"), timeout=WAIT
    )
    expect(ada.locator("#events .chat-refused")).to_contain_text("fake.png")
    expect(ada.locator("#body")).to_have_value("look at this")  # the text is given back
    # A type the tenant does not allow is refused at once, before anything is uploaded.
    binary = tmp_path / "tool.bin"
    binary.write_bytes(b"\x00\x01\x02")
    attach(ada, binary)
    ada.click("#send")
    expect(ada.locator("#attach-error")).to_contain_text(
        re.compile(r"tool\.bin: .* is not allowed here"), timeout=WAIT
    )
    expect(ada.locator("#attached li")).to_have_text([f"tool.bin (3 B){X}"])  # kept, to remove
    ada.get_by_role("button", name="Remove tool.bin").click()
    expect(ada.locator("#attached li")).to_have_count(0)
    expect(ada.locator("#pending")).to_have_text("")

    # An attachment alone (no text) is a message too.
    attach(ada, png)
    ada.fill("#body", "")
    ada.click("#send")
    for page in (ada, bob):
        expect(lines(page)).to_have_text(["Ada: hello Bob", "Ada: a dot", "Ada:"], timeout=WAIT)
        assert thumbnail_width(page, "Ada:", "dot.png") == 40

    # A reload shows the attachments from history (fresh links).
    bob.reload()
    expect(bob.locator("#status")).to_have_text("connected", timeout=WAIT)
    expect(lines(bob)).to_have_text(["Ada: hello Bob", "Ada: a dot", "Ada:"], timeout=WAIT)
    assert thumbnail_width(bob, "Ada: a dot", "dot.png") == 40
    notes_link = entry(bob, "Ada: a dot").get_by_role("link", name="notes.txt", exact=True)
    expect(notes_link).to_be_visible()
    # Ada's newest message stays seen by Bob.
    expect(entry(ada, "Ada:").locator(".chat-seen")).to_have_text("Seen by Bob", timeout=WAIT)
    for page in (ada, bob):
        assert not page.locator("#events").get_by_text("could not be loaded").count()
        assert page.errors == [], page.errors

    path = tmp_path / "receipts-attachments-ada.png"
    ada.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
