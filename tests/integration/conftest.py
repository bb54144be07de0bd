import pytest
from django.db import connection

from tests.conftest import service_missing
from tests.servers import ServerProcess, server_env


@pytest.fixture
def postgres_url(transactional_db):
    """The test database's URL, for server processes to share it (PostgreSQL only)."""
    if connection.vendor != "postgresql":
        service_missing("DATABASE_URL does not point at PostgreSQL")
    s = connection.settings_dict
    return f"postgres://{s['USER']}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


@pytest.fixture
def start_server(postgres_url, redis_url, aws, tmp_path):
    servers = []

    def start(**overrides):
        env = {**server_env(database_url=postgres_url, redis_url=redis_url, aws=aws), **overrides}
        server = ServerProcess.serve(env=env, log=tmp_path / f"server{len(servers)}.log")
        servers.append(server)
        return server.wait_ready()

    yield start
    for server in servers:
        server.stop()
