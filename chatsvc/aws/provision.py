"""Shapes of the queue, dead-letter queue and table, and their provisioning.

These are the same shapes that cloudformation/data.yaml creates; a test
(tests/infra/test_shapes_match.py) keeps the two from drifting apart. The
embedded local mode and the tests provision an emulator with them.
"""

import json

MAX_RECEIVE_COUNT = 5  # receives before a poison message goes to the DLQ
QUEUE_ATTRIBUTES = {
    "VisibilityTimeout": "60",
    "MessageRetentionPeriod": "345600",  # 4 days
    "ReceiveMessageWaitTimeSeconds": "20",
}
DLQ_ATTRIBUTES = {"MessageRetentionPeriod": "1209600"}  # 14 days, the maximum

TABLE_KEY_SCHEMA = [
    {"AttributeName": "connection_id", "KeyType": "HASH"},
    {"AttributeName": "message_id", "KeyType": "RANGE"},
]
TABLE_ATTRIBUTES = [
    {"AttributeName": "connection_id", "AttributeType": "S"},
    {"AttributeName": "message_id", "AttributeType": "S"},
]
TABLE_BILLING_MODE = "PAY_PER_REQUEST"
TABLE_TTL_ATTRIBUTE = "expires_at"


def ensure_queue(sqs, name: str) -> tuple[str, str]:
    """Create (or find) the queue and its DLQ; return (queue_url, dlq_url)."""
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq", Attributes=DLQ_ATTRIBUTES)["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT})
    queue_url = sqs.create_queue(
        QueueName=name, Attributes={**QUEUE_ATTRIBUTES, "RedrivePolicy": redrive}
    )["QueueUrl"]
    return queue_url, dlq_url


def ensure_table(dynamodb, name: str) -> None:
    """Create the messages table (if missing) with its TTL attribute enabled."""
    existing = dynamodb.list_tables()["TableNames"]
    if name not in existing:
        dynamodb.create_table(
            TableName=name,
            KeySchema=TABLE_KEY_SCHEMA,
            AttributeDefinitions=TABLE_ATTRIBUTES,
            BillingMode=TABLE_BILLING_MODE,
        )
        dynamodb.get_waiter("table_exists").wait(TableName=name)
    dynamodb.update_time_to_live(
        TableName=name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": TABLE_TTL_ATTRIBUTE},
    )
