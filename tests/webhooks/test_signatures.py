"""Deliveries verify with the snippets of docs/webhooks.md (Python and Node)."""

import base64
import json
import shutil
import subprocess

import pytest

from chatsvc.webhooks import outbox, services
from tests.webhooks.conftest import doc_snippet, drain, event

pytestmark = pytest.mark.django_db(transaction=True)


def documented_verify():
    namespace: dict = {}
    exec(doc_snippet("python"), namespace)  # noqa: S102 - the documentation's own code
    return namespace["verify"]


@pytest.fixture
def delivered(acme, receivers):
    receiver = receivers()
    created = services.create_endpoint(tenant=acme.tenant, url=receiver.url)
    outbox.record([event(acme.tenant, data={"body": "héllo \u2603", "seq": 7})])
    drain()
    (request,) = receiver.wait_for(1)
    return created, request


def test_the_documented_python_snippet_verifies_a_delivery(delivered):
    created, request = delivered
    verify = documented_verify()
    header = request["headers"]["Chatsvc-Signature"]
    assert header.startswith("t=") and ",v1=" in header
    assert verify(created.secret, header, request["body"])
    assert not verify(created.secret, header, request["body"] + b" ")
    assert not verify("whsec_wrong", header, request["body"])
    assert not verify(created.secret, "t=1,v1=" + header.split("v1=")[1], request["body"])  # old
    assert not verify(created.secret, "garbage", request["body"])
    assert json.loads(request["body"])["data"]["body"] == "héllo \u2603"


def test_after_a_rotation_both_secrets_verify(acme, receivers):
    receiver = receivers()
    created = services.create_endpoint(tenant=acme.tenant, url=receiver.url)
    new_secret = services.rotate_secret(endpoint=created.endpoint)
    outbox.record([event(acme.tenant)])
    drain()
    (request,) = receiver.wait_for(1)
    header = request["headers"]["Chatsvc-Signature"]
    assert header.count("v1=") == 2
    verify = documented_verify()
    assert verify(new_secret, header, request["body"])
    assert verify(created.secret, header, request["body"])


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_documented_node_snippet_verifies_a_delivery(delivered, tmp_path):
    created, request = delivered
    script = tmp_path / "verify.js"
    script.write_text(
        doc_snippet("js")
        + "\nconst [secret, header, body] = process.argv.slice(2);\n"
        + "console.log(JSON.stringify(verify(secret, header, Buffer.from(body, 'base64'))));\n"
    )
    header = request["headers"]["Chatsvc-Signature"]

    def node(secret, body):
        encoded = base64.b64encode(body).decode()
        result = subprocess.run(
            ["node", str(script), secret, header, encoded],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return json.loads(result.stdout)

    assert node(created.secret, request["body"]) is True
    assert node(created.secret, request["body"] + b"x") is False
    assert node("whsec_wrong", request["body"]) is False
