"""Loaded with `-p tests.bootstrap` (pyproject addopts), before Django's settings.

The suite runs with production settings (DEBUG off), so it provides the
secure values production would require, and fake AWS credentials for moto.
"""

import os

os.environ.setdefault("SECRET_KEY", "test-only-" + "k" * 60)
os.environ.setdefault("CHAT_QUEUE_URL", "http://127.0.0.1:9/000000000000/not-provisioned")
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.pop("AWS_PROFILE", None)
os.environ.setdefault("DATABASE_CONN_MAX_AGE", "0")  # no connection outlives a test
