"""One JSON object per log line, for CloudWatch Logs Insights."""

import json
import logging
import os
from datetime import UTC, datetime

# Set by the supervisor of `serve --workers N` (chatsvc/core/workers.py) in each
# web process it starts: their lines share one log stream per task.
WORKER_INDEX_ENV = "CHAT_WORKER_INDEX"
_WORKER_INDEX = os.environ.get(WORKER_INDEX_ENV)

# Attributes every LogRecord has; anything else was passed via `extra=`.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if _WORKER_INDEX is not None:
            entry.update(worker=_WORKER_INDEX, pid=record.process)
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)
