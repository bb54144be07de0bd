"""`run_local` as a user starts it, and two real headless Chromium pages chatting."""

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from chatsvc.settings import BASE_DIR
from tests.conftest import free_port, service_missing

pytestmark = pytest.mark.e2e

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def local_service(tmp_path):
    """The embedded mode: SQLite, in-memory layer, moto emulator, web + worker."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    log = open(tmp_path / "run_local.log", "ab")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "run_local", "--port", str(port)],
        cwd=BASE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail((tmp_path / "run_local.log").read_text())
        time.sleep(0.3)
    yield url
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0, (tmp_path / "run_local.log").read_text()
    log.close()
    assert "stopped." in (tmp_path / "run_local.log").read_text()


def test_two_browser_pages_chat_through_the_demo(local_service):
    chromium = shutil.which("chromium")
    if chromium is None:
        service_missing("Debian's chromium is not installed")
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
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
        finally:
            browser.close()
