"""Local and cloud cannot drift: the embedded emulator's provisioning
(chatsvc/aws/provision.py) and cloudformation/data.yaml define the same queue, DLQ
and table shapes."""

import pytest

from chatsvc.aws import provision
from tests.infra.cfn import load

pytestmark = pytest.mark.infra


@pytest.fixture(scope="module")
def resources():
    return load("data.yaml")["Resources"]


def of_type(resources, kind):
    found = [r["Properties"] for r in resources.values() if r["Type"] == kind]
    return found


def queues(resources):
    """(queue, dlq) properties: the DLQ is the one the other redrives to."""
    sqs = {name: r["Properties"] for name, r in resources.items() if r["Type"] == "AWS::SQS::Queue"}
    assert len(sqs) == 2, sorted(sqs)
    (main,) = [p for p in sqs.values() if "RedrivePolicy" in p]
    target = main["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
    return main, sqs[target]


def as_attributes(properties, names):
    return {name: str(properties[name]) for name in names if name in properties}


def test_queue_attributes_match(resources):
    main, _ = queues(resources)
    assert as_attributes(main, provision.QUEUE_ATTRIBUTES) == provision.QUEUE_ATTRIBUTES


def test_dlq_attributes_match(resources):
    _, dlq = queues(resources)
    assert as_attributes(dlq, provision.DLQ_ATTRIBUTES) == provision.DLQ_ATTRIBUTES
    # ...and the DLQ has nothing the emulator's DLQ lacks (encryption aside).
    shape = {k for k in dlq if k not in {"QueueName", "KmsMasterKeyId", "RedriveAllowPolicy"}}
    assert shape - {"KmsDataKeyReusePeriodSeconds"} == set(provision.DLQ_ATTRIBUTES)


def test_queue_shape_has_no_attribute_the_emulator_lacks(resources):
    main, _ = queues(resources)
    encryption = {"KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds", "SqsManagedSseEnabled"}
    shape = set(main) - {"QueueName", "RedrivePolicy"} - encryption
    assert shape == set(provision.QUEUE_ATTRIBUTES)


def test_redrive_count_matches(resources):
    main, _ = queues(resources)
    assert int(main["RedrivePolicy"]["maxReceiveCount"]) == provision.MAX_RECEIVE_COUNT


def test_dlq_is_named_after_the_queue(resources):
    main, dlq = queues(resources)
    assert main["QueueName"] == {"Fn::Sub": "${Prefix}-messages"}
    assert dlq["QueueName"] == {"Fn::Sub": main["QueueName"]["Fn::Sub"] + "-dlq"}


def test_table_keys_attributes_and_billing_match(resources):
    (table,) = of_type(resources, "AWS::DynamoDB::Table")
    assert table["KeySchema"] == provision.TABLE_KEY_SCHEMA
    assert table["AttributeDefinitions"] == provision.TABLE_ATTRIBUTES
    assert table["BillingMode"] == provision.TABLE_BILLING_MODE
    assert table["TimeToLiveSpecification"] == {
        "AttributeName": provision.TABLE_TTL_ATTRIBUTE,
        "Enabled": True,
    }


def test_cloud_table_adds_recovery_and_encryption(resources):
    (table,) = of_type(resources, "AWS::DynamoDB::Table")
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["SSESpecification"]["SSEEnabled"] is True
    assert table["SSESpecification"]["SSEType"] == "KMS"
    main, dlq = queues(resources)
    assert main["KmsMasterKeyId"] == dlq["KmsMasterKeyId"] == {"Ref": "KmsKeyArn"}


def attachments_bucket(resources) -> dict:
    (bucket,) = of_type(resources, "AWS::S3::Bucket")
    return bucket


def test_bucket_cors_and_incomplete_upload_rule_match(resources):
    bucket = attachments_bucket(resources)
    condition, cors, absent = bucket["CorsConfiguration"]["Fn::If"]
    assert condition == "HasAttachmentCorsOrigins" and absent == {"Ref": "AWS::NoValue"}
    (rule,) = cors["CorsRules"]
    local = provision.bucket_cors_rule(["<origins>"])
    assert rule == {
        "AllowedMethods": local["AllowedMethods"],
        "AllowedOrigins": {"Ref": "AttachmentCorsOrigins"},
        "AllowedHeaders": local["AllowedHeaders"],
        "ExposedHeaders": local["ExposeHeaders"],
        "MaxAge": local["MaxAgeSeconds"],
    }
    abort, expire = bucket["LifecycleConfiguration"]["Rules"]
    assert abort == {
        "Id": "abort-incomplete-uploads",
        "Status": "Enabled",
        "AbortIncompleteMultipartUpload": {
            "DaysAfterInitiation": provision.BUCKET_ABORT_INCOMPLETE_DAYS
        },
    }
    # Expiry only when the operator sets AttachmentExpirationDays (0: never).
    assert expire["Fn::If"] == [
        "HasAttachmentExpiration",
        {
            "Id": "expire-attachments",
            "Status": "Enabled",
            "ExpirationInDays": {"Ref": "AttachmentExpirationDays"},
        },
        {"Ref": "AWS::NoValue"},
    ]
    params = load("data.yaml")["Parameters"]
    assert params["AttachmentCorsOrigins"]["Default"] == ""
    assert params["AttachmentExpirationDays"]["Default"] == 0


def test_cloud_bucket_is_private_kms_encrypted_tls_only_and_unversioned(resources):
    bucket = attachments_bucket(resources)
    assert bucket["PublicAccessBlockConfiguration"] == provision.BUCKET_PUBLIC_ACCESS_BLOCK
    assert bucket["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    (encryption,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption == {
        "ServerSideEncryptionByDefault": {
            "SSEAlgorithm": "aws:kms",
            "KMSMasterKeyID": {"Ref": "KmsKeyArn"},
        },
        "BucketKeyEnabled": True,
    }
    # Deleting a message must delete its bytes: no noncurrent versions kept.
    assert "VersioningConfiguration" not in bucket
    (policy,) = of_type(resources, "AWS::S3::BucketPolicy")
    assert policy["Bucket"] == {"Ref": "AttachmentsBucket"}
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny" and statement["Principal"] == "*"
    assert statement["Action"] == "s3:*"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert statement["Resource"] == [
        {"Fn::GetAtt": ["AttachmentsBucket", "Arn"]},
        {"Fn::Sub": "${AttachmentsBucket.Arn}/*"},
    ]
