from django.db.backends.postgresql import base

from chatsvc.core.rotating_postgres import credentials


class DatabaseWrapper(base.DatabaseWrapper):
    """Django's PostgreSQL backend that reconnects with rotated credentials."""

    def get_new_connection(self, conn_params):
        current = credentials.current()
        if current:
            conn_params = {**conn_params, **current}
        try:
            return super().get_new_connection(conn_params)
        except base.Database.OperationalError as exc:
            if not credentials.rejected(exc):
                raise
            fresh = credentials.refresh()
            if not fresh or fresh == current:
                raise
            return super().get_new_connection({**conn_params, **fresh})
