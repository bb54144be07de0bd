"""boto3 clients configured from settings (region, optional local endpoint)."""

from functools import cache

import boto3
from botocore.config import Config
from django.conf import settings

# Retries are ours to control (the producer and worker back off themselves);
# botocore's standard mode still handles throttling on single calls.
CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 3},
    connect_timeout=2,
    read_timeout=25,  # above SQS long-poll WaitTimeSeconds (20)
    max_pool_connections=32,
)


# The web tier's SendMessageBatch: a hung call must give up well within a
# sender's deadline (CHAT_SEND_DEADLINE_SECONDS), so it frees its slot.
SEND_CONFIG = CLIENT_CONFIG.merge(
    Config(retries={"mode": "standard", "max_attempts": 2}, read_timeout=4)
)
CONFIGS = {"default": CLIENT_CONFIG, "send": SEND_CONFIG}


@cache
def _client(service: str, region: str, endpoint: str | None, config: str):
    return boto3.session.Session().client(
        service, region_name=region, endpoint_url=endpoint, config=CONFIGS[config]
    )


def client(service: str, config: str = "default"):
    """A cached, thread-safe boto3 client for `service` per region and endpoint."""
    return _client(service, settings.AWS_REGION, settings.AWS_ENDPOINT_URL, config)


def sqs():
    return client("sqs")


def sqs_sender():
    """SQS for the web tier's producer: short timeouts."""
    return client("sqs", "send")


def dynamodb():
    return client("dynamodb")
