"""Shared by the end-to-end tests: Debian's headless Chromium and the embedded service."""

import shutil

import pytest

from tests.conftest import service_missing
from tests.servers import ServerProcess

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
    service = ServerProcess.run_local(database=tmp_path / "db.sqlite3", log=tmp_path / "run.log")
    yield service.wait_ready("/readyz").url
    assert service.stop() == 0, service.log_path.read_text()
    assert "stopped." in service.log_path.read_text()


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium, driven by Playwright."""
    chromium = shutil.which("chromium")
    if chromium is None:
        service_missing("Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()
