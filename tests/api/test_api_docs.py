"""The OpenAPI document and the interactive docs (/api/v1/docs) as integrators meet them."""

import json
import re
import shutil
from urllib.parse import urlsplit

import pytest
from django.contrib.staticfiles import finders
from openapi_spec_validator import validate

from tests.conftest import service_missing

OPERATIONS = {
    ("post", "/api/v1/connections"): "createConnection",
    ("get", "/api/v1/connections"): "listConnections",
    ("get", "/api/v1/connections/{connection_id}"): "getConnection",
    ("post", "/api/v1/connections/{connection_id}/close"): "closeConnection",
    ("get", "/api/v1/connections/{connection_id}/messages"): "listMessages",
    ("post", "/api/v1/tokens"): "mintToken",
}
PAGED = {"listConnections", "listMessages"}


@pytest.fixture(scope="module")
def spec():
    from django.test import Client

    response = Client().get("/api/v1/openapi.json")
    assert response.status_code == 200
    return response.json()


def operations(spec):
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            yield method, path, operation


def test_the_openapi_document_is_valid(spec):
    validate(spec)  # raises on any violation of OpenAPI 3.1


def test_operations_have_clean_ids_a_summary_and_a_description(spec):
    found = {(method, path): op["operationId"] for method, path, op in operations(spec)}
    assert OPERATIONS.items() <= found.items()
    for method, path, operation in operations(spec):
        assert re.fullmatch(r"[a-z]+(?:[A-Z][a-z]+)*", operation["operationId"]), operation
        assert operation.get("summary") and operation.get("description"), (method, path)
    assert len(set(found.values())) == len(found)  # unique: they become method names


def test_limits_and_formats_are_in_the_schema(spec):
    schemas = spec["components"]["schemas"]
    metadata = schemas["ConnectionIn"]["properties"]["metadata"]
    assert metadata["x-max-bytes"] == 4096 and "4096 bytes" in metadata["description"]
    assert schemas["ConnectionIn"]["properties"]["title"]["maxLength"] == 200
    assert schemas["ConnectionOut"]["properties"]["connection_id"]["pattern"]
    token = schemas["TokenIn"]["properties"]
    assert (token["ttl_seconds"]["minimum"], token["ttl_seconds"]["maximum"]) == (60, 86400)
    assert token["connection_ids"]["maxItems"] == 100
    for _method, path, operation in operations(spec):
        for parameter in operation.get("parameters", ()):
            if parameter["name"] == "limit" and operation["operationId"] in PAGED:
                assert parameter["schema"]["maximum"] == 100, path
            if parameter["name"] == "connection_id":
                schema = parameter["schema"]
                schema = schema.get("items", schema)  # a repeated parameter: each value
                assert schema["pattern"] == "^[0-7][0-9A-HJKMNP-TV-Z]{25}$", path
    for name in ("ConnectionIn", "ConnectionOut", "TokenIn", "TokenOut", "MessagesOut"):
        assert schemas[name].get("examples"), name


def test_errors_are_documented_with_the_error_shape(spec):
    for method, path, operation in operations(spec):
        for status in ("401", "429"):
            error = operation["responses"][status]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/ErrorOut"}, (method, path)
        if "{connection_id}" in path:
            assert "404" in operation["responses"], (method, path)


def test_the_docs_page_needs_nothing_but_this_service(client):
    response = client.get("/api/v1/docs")
    assert response.status_code == 200
    html = response.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and all(url.startswith("/static/") for url in assets), assets
    for url in assets:
        assert finders.find(url.removeprefix("/static/")), url
    # The bundle's licence notes, which django-ninja does not ship (chatsvc/static/ninja/).
    assert finders.find("ninja/swagger-ui-bundle.js.LICENSE.txt")
    assert finders.find("ninja/swagger-ui-LICENSE.txt")
    settings = json.loads(re.search(r'id="swagger-settings">(.*?)</script>', html, re.S)[1])
    assert settings["url"] == "/api/v1/openapi.json"
    assert settings["validatorUrl"] is None  # the badge would fetch validator.swagger.io


@pytest.mark.e2e
def test_the_docs_page_renders_in_a_browser_offline(live_server):
    """Headless Chromium: every request goes to this service; the operations render."""
    chromium = shutil.which("chromium")
    if chromium is None:
        service_missing("Debian's chromium is not installed")
    from playwright.sync_api import expect, sync_playwright

    from tests.e2e.conftest import CHROMIUM_FLAGS

    ours = urlsplit(live_server.url).netloc
    elsewhere, problems = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()

            def route(route):
                netloc = urlsplit(route.request.url).netloc
                if netloc and netloc != ours:
                    elsewhere.append(route.request.url)
                    return route.abort()
                return route.continue_()

            page.route("**/*", route)
            page.on("console", lambda m: m.type == "error" and problems.append(m.text))
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(f"{live_server.url}/api/v1/docs")
            ids = page.locator(".opblock-summary-operation-id")
            expect(ids.filter(has_text="mintToken")).to_be_visible(timeout=15000)
            shown = set(ids.all_inner_texts())
        finally:
            browser.close()
    assert set(OPERATIONS.values()) <= shown, shown
    assert not elsewhere, elsewhere
    assert not problems, problems
