"""Shapes of the queue, dead-letter queue, table and attachments bucket, and their provisioning.

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

# The attachments bucket: browsers POST uploads (presigned) and GET downloads
# (presigned) from the tenants' origins; cloudformation/data.yaml has the same
# CORS rule and incomplete-upload rule, plus KMS, TLS-only and expiry.
BUCKET_CORS_METHODS = ["GET", "POST"]
BUCKET_CORS_HEADERS = ["*"]
BUCKET_CORS_EXPOSE = ["ETag"]
BUCKET_CORS_MAX_AGE = 3000
BUCKET_ABORT_INCOMPLETE_DAYS = 1
BUCKET_PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}


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


def bucket_cors_rule(origins: list[str]) -> dict:
    return {
        "AllowedMethods": BUCKET_CORS_METHODS,
        "AllowedOrigins": origins,
        "AllowedHeaders": BUCKET_CORS_HEADERS,
        "ExposeHeaders": BUCKET_CORS_EXPOSE,
        "MaxAgeSeconds": BUCKET_CORS_MAX_AGE,
    }


def ensure_bucket(s3, name: str, *, cors_origins: list[str]) -> None:
    """Create (or find) the attachments bucket: private, encrypted, CORS for the
    given browser origins, incomplete multipart uploads aborted after a day."""
    try:
        s3.head_bucket(Bucket=name)
    except s3.exceptions.ClientError:
        region = s3.meta.region_name
        location = (
            {}
            if region == "us-east-1"
            else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        )
        s3.create_bucket(Bucket=name, **location)
    s3.put_public_access_block(
        Bucket=name, PublicAccessBlockConfiguration=BUCKET_PUBLIC_ACCESS_BLOCK
    )
    s3.put_bucket_encryption(
        Bucket=name,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    if cors_origins:
        s3.put_bucket_cors(
            Bucket=name, CORSConfiguration={"CORSRules": [bucket_cors_rule(cors_origins)]}
        )
    s3.put_bucket_lifecycle_configuration(
        Bucket=name,
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": "abort-incomplete-uploads",
                    "Status": "Enabled",
                    "Filter": {"Prefix": ""},
                    "AbortIncompleteMultipartUpload": {
                        "DaysAfterInitiation": BUCKET_ABORT_INCOMPLETE_DAYS
                    },
                }
            ]
        },
    )
