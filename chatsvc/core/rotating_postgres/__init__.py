"""PostgreSQL whose credentials follow a Secrets Manager rotation.

ENGINE ``chatsvc.core.rotating_postgres`` (settings pick it when
``DATABASE_SECRET_ARN`` is set). A task starts with the credentials ECS injected
from the secret into ``DATABASE_URL``. RDS rotates that secret (every 7 days for
the managed master secret): open connections stay open, but a new connection
with the old password is refused. Then, and only then, the backend reads the
secret once and connects with what it holds now, as do all later connections of
the process. Without this, every task would lose the database a week after it
started.
"""
