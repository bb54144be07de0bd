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


@cache
def _client(service: str, region: str, endpoint: str | None):
    return boto3.session.Session().client(
        service, region_name=region, endpoint_url=endpoint, config=CLIENT_CONFIG
    )


def client(service: str):
    """A cached, thread-safe boto3 client for `service` per region and endpoint."""
    return _client(service, settings.AWS_REGION, settings.AWS_ENDPOINT_URL)


def sqs():
    return client("sqs")


def dynamodb():
    return client("dynamodb")
