"""Fault injection on a boto3 client: make chosen calls fail, vanish or kill the process."""

from __future__ import annotations

from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError


class Killed(BaseException):
    """The process dies here: nothing in the program may catch it."""


def client_error(operation: str, code: str = "ServiceUnavailable") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "injected fault"}}, operation)


def inject(client, operation: str, calls: set[int] | None, action) -> dict:
    """On the n-th call of `operation` (1-based; None: every call) run `action(params)`.

    `action` may raise (the call fails, or the process dies) or return botocore's
    (http, parsed) pair: the call then "succeeds" without reaching AWS (a lost write).
    Returns a counter that the test can read.
    """
    service = client.meta.service_model.service_id.hyphenize()
    counter = {"calls": 0}

    def hook(params, **_):
        counter["calls"] += 1
        if calls is None or counter["calls"] in calls:
            return action(params)
        return None

    client.meta.events.register(f"before-call.{service}.{operation}", hook)
    return counter


def fail(operation: str, code: str = "ServiceUnavailable"):
    def action(params):
        raise client_error(operation, code)

    return action


def die(params):
    raise Killed()


def lose_write(params):
    # A before-call handler's (http response, parsed response) short-circuits the call.
    http = AWSResponse("https://lost.invalid/", 200, {}, None)
    return (http, {"ResponseMetadata": {"HTTPStatusCode": 200}})
