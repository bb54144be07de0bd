"""Django settings, read from the environment (see docs/configuration.md).

With no environment at all the service runs on its embedded defaults: SQLite,
the in-memory channel layer and whatever AWS endpoint `run_local` provides.
Production (DEBUG off) refuses to start on insecure defaults; see
chatsvc.core.startup.assert_safe_for_production.
"""

from pathlib import Path

import botocore.config
import dj_database_url

from chatsvc.env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

INSECURE_SECRET_KEY = "insecure-local-development-key-never-use-in-production"  # noqa: S105
SECRET_KEY = env_str("SECRET_KEY", INSECURE_SECRET_KEY)
# Old keys, comma-separated, while rotating SECRET_KEY: sessions and stored
# signing secrets made with them stay readable.
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS")
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "ninja",  # its static Swagger UI: the API docs need no CDN
    "chatsvc.core",
    "chatsvc.tenants",
    "chatsvc.rooms",
    "chatsvc.messaging",
    "chatsvc.realtime",
    "chatsvc.api",
    "chatsvc.webhooks",
    "chatsvc.demo",
    "lti_tool",  # django-lti: platform registrations, deployments, tool keys
    "chatsvc.lti",
    "chatsvc.attachments",
    "chatsvc.usage",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "chatsvc.core.security_headers.ContentSecurityPolicy",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "chatsvc.api.middleware.ApiErrorShape",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "chatsvc.core.login_throttle.AdminLoginThrottle",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatsvc.urls"
ASGI_APPLICATION = "chatsvc.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
# The secret DATABASE_URL's credentials came from: when it rotates, new
# connections read it again (chatsvc.core.rotating_postgres).
DATABASE_SECRET_ARN = env_str("DATABASE_SECRET_ARN", "")
if DATABASE_SECRET_ARN and DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"]["ENGINE"] = "chatsvc.core.rotating_postgres"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# The reference client (chatsvc/static/chatsvc/chatsvc.js) is served by the service.
STATICFILES_DIRS = [BASE_DIR / "chatsvc" / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# --- Channel layer -----------------------------------------------------------
# RedisPubSubChannelLayer: one PUBLISH per room message whatever the room size,
# no per-channel capacity that silently drops group messages, no group expiry.
# Each process subscribes once per room (chatsvc.realtime.hub). See
# docs/architecture.md.
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": "chatsvc"},
        }
    }
else:
    # One process, no Redis: the RoomHub's single channel must absorb bursts.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": 100_000},
        }
    }

# Django's cache carries the REST and admin-login throttles: shared by every
# process through Redis, per process without it.
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

# --- AWS -----------------------------------------------------------------------
AWS_REGION = env_str("AWS_REGION", "us-east-1")
AWS_ENDPOINT_URL = env_str("AWS_ENDPOINT_URL") or None
CHAT_QUEUE_URL = env_str("CHAT_QUEUE_URL")
CHAT_TABLE_NAME = env_str("CHAT_TABLE_NAME", "chatsvc-messages")

# --- Attachments ---------------------------------------------------------------
# Files go straight from the browser to S3 (presigned POST) under
# tenants/<tenant>/rooms/<room>/<id>/<name>; docs/attachments.md. The bucket is
# reached through django-storages (STORAGES["attachments"]) with the same region
# and endpoint (the local emulator) as SQS and DynamoDB.
CHAT_ATTACHMENTS_BUCKET = env_str("CHAT_ATTACHMENTS_BUCKET", "chatsvc-attachments")
CHAT_ATTACHMENT_UPLOAD_SECONDS = env_int("CHAT_ATTACHMENT_UPLOAD_SECONDS", 600)
CHAT_ATTACHMENT_URL_SECONDS = env_int("CHAT_ATTACHMENT_URL_SECONDS", 3600)
CHAT_ATTACHMENT_MAX_PENDING = env_int("CHAT_ATTACHMENT_MAX_PENDING", 20)
CHAT_ATTACHMENT_PENDING_SECONDS = env_int("CHAT_ATTACHMENT_PENDING_SECONDS", 86400)
STORAGES["attachments"] = {
    "BACKEND": "storages.backends.s3.S3Storage",
    "OPTIONS": {
        "bucket_name": CHAT_ATTACHMENTS_BUCKET,
        "region_name": AWS_REGION,
        "endpoint_url": AWS_ENDPOINT_URL,
        "default_acl": None,  # the bucket enforces owner-only objects (no ACLs)
        "querystring_auth": True,  # downloads are presigned GETs
        "querystring_expire": CHAT_ATTACHMENT_URL_SECONDS,
        "file_overwrite": False,
        "client_config": botocore.config.Config(
            signature_version="s3v4",
            # The emulator answers on an IP address: path-style there.
            s3={"addressing_style": "path" if AWS_ENDPOINT_URL else "virtual"},
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=2,
            read_timeout=10,
        ),
    },
}

# --- Real-time limits ----------------------------------------------------------
# Hard cap before the tenant is known (pre-auth); tenants may only lower it.
CHAT_MAX_FRAME_BYTES = env_int("CHAT_MAX_FRAME_BYTES", 65536)
CHAT_MAX_BODY_CHARS = env_int("CHAT_MAX_BODY_CHARS", 4000)
# Reactions one message can carry: different emoji, and (user, emoji) pairs in all.
CHAT_REACTION_KINDS_PER_MESSAGE = env_int("CHAT_REACTION_KINDS_PER_MESSAGE", 20)
CHAT_REACTIONS_PER_MESSAGE = env_int("CHAT_REACTIONS_PER_MESSAGE", 1000)
# `read` frames are coalesced per socket: at most one write of the read position
# and one receipt to the room per room per this many seconds.
CHAT_READ_COALESCE_SECONDS = env_int("CHAT_READ_COALESCE_SECONDS", 1)
CHAT_AUTH_TIMEOUT_SECONDS = env_int("CHAT_AUTH_TIMEOUT_SECONDS", 10)
# Sockets of one process that authenticate or join at once (a reconnect storm's
# others wait their turn, so live rooms stay fast; 0: no limit), and how long one
# may wait before it gets `overloaded`.
CHAT_ADMISSION_CONCURRENCY = env_int("CHAT_ADMISSION_CONCURRENCY", 16)
CHAT_ADMISSION_WAIT_SECONDS = env_int("CHAT_ADMISSION_WAIT_SECONDS", 10)
# Sockets one client address may hold open before authenticating (per process).
CHAT_MAX_UNAUTHENTICATED_PER_ADDRESS = env_int("CHAT_MAX_UNAUTHENTICATED_PER_ADDRESS", 200)
# A connection must send its request headers within this (slowloris).
CHAT_HEADER_TIMEOUT_SECONDS = env_int("CHAT_HEADER_TIMEOUT_SECONDS", 10)
CHAT_MAX_ROOMS_PER_SOCKET = env_int("CHAT_MAX_ROOMS_PER_SOCKET", 50)
CHAT_SQS_MAX_ATTEMPTS = env_int("CHAT_SQS_MAX_ATTEMPTS", 5)
# A send not accepted by SQS within this many seconds gets `not_stored`; past
# CHAT_SEND_BACKLOG messages waiting for SQS, new sends get `overloaded` at once.
CHAT_SEND_DEADLINE_SECONDS = env_int("CHAT_SEND_DEADLINE_SECONDS", 10)
CHAT_SEND_BACKLOG = env_int("CHAT_SEND_BACKLOG", 5000)
# A socket whose unsent bytes stay above this for 5 s without going down is closed 1013 (0: never).
CHAT_SLOW_READER_BYTES = env_int("CHAT_SLOW_READER_BYTES", 1024 * 1024)
# Lag (event loop, or frames waiting for it) past which new messages get `overloaded` (0: never).
CHAT_OVERLOAD_LAG_MS = env_int("CHAT_OVERLOAD_LAG_MS", 250)
CHAT_DEDUP_TTL_SECONDS = env_int("CHAT_DEDUP_TTL_SECONDS", 86400)
# Every web process re-checks its sockets' keys, tenants and rooms this often
# (revocations that bypassed the model signals: QuerySet.update, raw SQL).
CHAT_REVALIDATE_SECONDS = env_int("CHAT_REVALIDATE_SECONDS", 30)
# Keys, revocations and rooms that auth and join read are cached per process this
# long at most; a change is forgotten at once (published), this bounds a missed one.
CHAT_LOOKUP_CACHE_SECONDS = env_int("CHAT_LOOKUP_CACHE_SECONDS", 10)
# `joined` lists at most this many of the room's members (first joined first),
# plus `member_count`. Presence entries of a web process that died fade out
# after 3 revalidation sweeps (chatsvc.realtime.presence).
CHAT_PRESENCE_LIST_MAX = env_int("CHAT_PRESENCE_LIST_MAX", 100)
# The replay window of each room (resume after reconnect, gap repair, history
# not yet in DynamoDB): at least the last N messages or the last S seconds,
# whichever is more, never more than the maximum.
CHAT_REPLAY_MESSAGES = env_int("CHAT_REPLAY_MESSAGES", 1000)
CHAT_REPLAY_SECONDS = env_int("CHAT_REPLAY_SECONDS", 600)
CHAT_REPLAY_MAX_MESSAGES = env_int("CHAT_REPLAY_MAX_MESSAGES", 10000)
# SIGTERM: sockets are closed with 1012 at random moments over this window, so
# clients do not all reconnect in the same second (docs/deployment.md).
CHAT_DRAIN_SECONDS = env_int("CHAT_DRAIN_SECONDS", 10)
# In AWS the drain starts when the load balancer starts draining this task
# (chatsvc/core/drain_watch.py): the colour's target group, checked this often.
CHAT_TARGET_GROUP_ARN = env_str("CHAT_TARGET_GROUP_ARN")
CHAT_TARGET_ADDRESS = env_str("CHAT_TARGET_ADDRESS")  # ip:port; default: ECS task metadata
CHAT_DRAIN_WATCH_SECONDS = env_int("CHAT_DRAIN_WATCH_SECONDS", 5)
# After a swap the old colour moves its production-listener sockets off over this
# window (its target group's live tag turned false); test-listener ones stay.
CHAT_DEMOTED_DRAIN_SECONDS = env_int("CHAT_DEMOTED_DRAIN_SECONDS", 300)
# Control frames (join, leave, history, ping, ...) per socket; send and typing use
# the tenant's messages_per_second (chatsvc/realtime/ratelimit.py).
CHAT_CONTROL_FRAMES_PER_SECOND = env_int("CHAT_CONTROL_FRAMES_PER_SECOND", 20)
CHAT_CONTROL_BURST = env_int("CHAT_CONTROL_BURST", 50)
CHAT_TEST_LISTENER_PORT = env_int("CHAT_TEST_LISTENER_PORT", 8080)
CHAT_UVLOOP = env_bool("CHAT_UVLOOP", True)
# Web processes serving one port (`manage.py serve`; chatsvc/core/workers.py):
# 0 means one per CPU available to the process. More than 1 needs REDIS_URL.
CHAT_WEB_WORKERS = env_int("CHAT_WEB_WORKERS", 0)
CHAT_WORKER_POLLERS = env_int("CHAT_WORKER_POLLERS", 1)
CHAT_WORKER_LINGER_MS = env_int("CHAT_WORKER_LINGER_MS", 500)

# --- Usage -------------------------------------------------------------------
# Per tenant and hour counters behind the admin's usage page (chatsvc.usage,
# docs/operations.md#usage-page): kept this many days.
CHAT_USAGE_RETENTION_DAYS = env_int("CHAT_USAGE_RETENTION_DAYS", 90)

# --- Webhooks ------------------------------------------------------------------
# Signed POSTs of chat events to tenants' endpoints (docs/webhooks.md), sent from
# an outbox by a sender in the worker role (or `manage.py deliver_webhooks`).
# Private, loopback and link-local addresses and plain http are refused unless
# CHAT_WEBHOOK_ALLOW_PRIVATE (tests, local mode; never in production).
CHAT_WEBHOOK_ALLOW_PRIVATE = env_bool("CHAT_WEBHOOK_ALLOW_PRIVATE", False)
CHAT_WEBHOOK_IN_WORKER = env_bool("CHAT_WEBHOOK_IN_WORKER", True)
CHAT_WEBHOOK_SENDER_THREADS = env_int("CHAT_WEBHOOK_SENDER_THREADS", 4)
CHAT_WEBHOOK_POLL_SECONDS = env_int("CHAT_WEBHOOK_POLL_SECONDS", 1)
CHAT_WEBHOOK_CONNECT_TIMEOUT_SECONDS = env_int("CHAT_WEBHOOK_CONNECT_TIMEOUT_SECONDS", 3)
CHAT_WEBHOOK_TIMEOUT_SECONDS = env_int("CHAT_WEBHOOK_TIMEOUT_SECONDS", 10)
CHAT_WEBHOOK_RETRY_BASE_SECONDS = env_int("CHAT_WEBHOOK_RETRY_BASE_SECONDS", 10)
CHAT_WEBHOOK_RETRY_MAX_SECONDS = env_int("CHAT_WEBHOOK_RETRY_MAX_SECONDS", 3600)
CHAT_WEBHOOK_MAX_AGE_SECONDS = env_int("CHAT_WEBHOOK_MAX_AGE_SECONDS", 86400)
CHAT_WEBHOOK_DISABLE_AFTER_SECONDS = env_int("CHAT_WEBHOOK_DISABLE_AFTER_SECONDS", 86400)
CHAT_WEBHOOK_DISABLE_AFTER_FAILURES = env_int("CHAT_WEBHOOK_DISABLE_AFTER_FAILURES", 10)
CHAT_WEBHOOK_MAX_ENDPOINTS = env_int("CHAT_WEBHOOK_MAX_ENDPOINTS", 20)
CHAT_WEBHOOK_ENDPOINT_CACHE_SECONDS = env_int("CHAT_WEBHOOK_ENDPOINT_CACHE_SECONDS", 5)

# --- Security ------------------------------------------------------------------
# REST requests per API key per minute (429 with Retry-After past it), and
# failed admin logins per client address and user name per 15 minutes.
CHAT_API_REQUESTS_PER_MINUTE = env_int("CHAT_API_REQUESTS_PER_MINUTE", 600)
CHAT_ADMIN_LOGIN_FAILURES = env_int("CHAT_ADMIN_LOGIN_FAILURES", 5)
# The interactive API docs (/api/v1/docs); the OpenAPI document stays.
CHAT_API_DOCS = env_bool("CHAT_API_DOCS", True)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
# Load balancer health checks arrive over plain HTTP on the target port.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
X_FRAME_OPTIONS = "DENY"

# --- Logging -------------------------------------------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
LOG_FORMAT = env_str("LOG_FORMAT", "console" if DEBUG else "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "chatsvc.core.logs.JsonFormatter"},
        "console": {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s"},
    },
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["stderr"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "werkzeug": {"level": "WARNING"},  # the embedded AWS emulator
    },
}
