"""Database credentials that follow a rotation: real PostgreSQL, the secret on moto's
server over HTTP. This PostgreSQL trusts local connections whatever the password, so
a "rotation" here changes the user name: the refused connection is real (SQLSTATE 28),
and so is the one that follows with what the secret holds now."""

import json
import uuid

import pytest
from django.db import connection
from django.db.utils import OperationalError

from chatsvc.core.rotating_postgres import base, credentials
from tests.conftest import service_missing

pytestmark = pytest.mark.integration


@pytest.fixture
def secret(aws, settings):
    from chatsvc.aws import clients

    if connection.vendor != "postgresql":
        service_missing("DATABASE_URL does not point at PostgreSQL")
    secrets_manager = clients.client("secretsmanager")
    arn = secrets_manager.create_secret(
        Name=f"db-{uuid.uuid4().hex[:8]}",
        SecretString=json.dumps({"username": connection.settings_dict["USER"], "password": "x"}),
    )["ARN"]
    settings.DATABASE_SECRET_ARN = arn
    reads = {"count": 0}

    def count(**_):
        reads["count"] += 1

    secrets_manager.meta.events.register("before-call.secrets-manager.GetSecretValue", count)
    credentials.forget()
    yield secrets_manager, arn, reads
    secrets_manager.meta.events.unregister("before-call.secrets-manager.GetSecretValue", count)
    credentials.forget()


def wrapper(user: str) -> base.DatabaseWrapper:
    """A connection of our backend with the credentials the task started with."""
    return base.DatabaseWrapper({**connection.settings_dict, "USER": user}, alias="rotating")


def current_user(db: base.DatabaseWrapper) -> str:
    with db.cursor() as cursor:
        cursor.execute("select current_user")
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_refused_credentials_are_read_again_from_the_secret_once(secret):
    _, _, reads = secret
    stale = wrapper(f"rotated_away_{uuid.uuid4().hex[:6]}")  # what the task started with
    try:
        assert current_user(stale) == connection.settings_dict["USER"]
        assert reads["count"] == 1
        # Later connections of the process use the fresh credentials straight away.
        again = wrapper(f"rotated_away_{uuid.uuid4().hex[:6]}")
        assert current_user(again) == connection.settings_dict["USER"]
        again.close()
        assert reads["count"] == 1
    finally:
        stale.close()


@pytest.mark.django_db
def test_a_secret_that_is_no_better_gives_the_original_error(secret):
    secrets_manager, arn, reads = secret
    ghost = f"ghost_{uuid.uuid4().hex[:6]}"
    secrets_manager.put_secret_value(
        SecretId=arn, SecretString=json.dumps({"username": ghost, "password": "x"})
    )
    db = wrapper(ghost)
    try:
        with pytest.raises(OperationalError, match=f'role "{ghost}" does not exist'):
            db.ensure_connection()
    finally:
        db.close()
    assert reads["count"] == 1


@pytest.mark.django_db
def test_other_connection_failures_do_not_read_the_secret(secret):
    _, _, reads = secret
    db = base.DatabaseWrapper({**connection.settings_dict, "PORT": 1}, alias="rotating")
    try:
        with pytest.raises(OperationalError):
            db.ensure_connection()
    finally:
        db.close()
    assert reads["count"] == 0


def test_settings_choose_the_rotating_backend_only_with_a_secret(tmp_path):
    import subprocess
    import sys

    code = "from django.conf import settings; print(settings.DATABASES['default']['ENGINE'])"
    base_env = {"DJANGO_SETTINGS_MODULE": "chatsvc.settings", "PATH": "/usr/bin:/bin"}
    url = "postgres://u@127.0.0.1:5432/d"

    def engine(**env):
        return subprocess.run(
            [sys.executable, "-c", f"import django; django.setup(); {code}"],
            env={**base_env, **env},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    assert engine(DATABASE_URL=url) == "django.db.backends.postgresql"
    assert engine(DATABASE_URL=url, DATABASE_SECRET_ARN="arn:x") == "chatsvc.core.rotating_postgres"
    assert engine(DATABASE_SECRET_ARN="arn:x").endswith("sqlite3")  # local mode untouched
