#!/bin/sh
# Container entrypoint. Roles:
#   web      ASGI server (manage.py serve: daphne, graceful SIGTERM) on 0.0.0.0:8000,
#            one process per CPU (CHAT_WEB_WORKERS) under a supervisor that keeps PID 1
#   worker   SQS -> DynamoDB consumer (manage.py consume_queue)
#   migrate  database migrations, run once per release (a one-off task)
#   healthcheck  used by the image's HEALTHCHECK and the ECS container health check:
#                a web task turns healthy only once /readyz answered 200 (database,
#                Redis and SQS reachable); after that it stays healthy while alive
# Anything else is executed as given (e.g. `python manage.py shell`).
#
# DATABASE_URL and REDIS_URL may be given directly. When they are not, they are
# composed from the variables ECS injects from Secrets Manager:
#   DATABASE_HOST, DATABASE_PORT (5432), DATABASE_NAME, DATABASE_USER, DATABASE_PASSWORD
#   REDIS_HOST, REDIS_PORT (6379), REDIS_AUTH_TOKEN, REDIS_TLS (true -> rediss://)
set -eu

compose_urls() {
    if [ -z "${DATABASE_URL:-}" ] && [ -n "${DATABASE_HOST:-}" ]; then
        DATABASE_URL="$(python -c 'import os
from urllib.parse import quote
e = os.environ
print("postgres://{}:{}@{}:{}/{}".format(
    quote(e["DATABASE_USER"], safe=""), quote(e["DATABASE_PASSWORD"], safe=""),
    e["DATABASE_HOST"], e.get("DATABASE_PORT") or "5432", e.get("DATABASE_NAME") or "chatsvc"))')"
        export DATABASE_URL
    fi
    if [ -z "${REDIS_URL:-}" ] && [ -n "${REDIS_HOST:-}" ]; then
        REDIS_URL="$(python -c 'import os
from urllib.parse import quote
e = os.environ
scheme = "rediss" if e.get("REDIS_TLS", "true").lower() in ("1", "true", "yes") else "redis"
token = e.get("REDIS_AUTH_TOKEN", "")
auth = ":{}@".format(quote(token, safe="")) if token else ""
print("{}://{}{}:{}/0".format(scheme, auth, e["REDIS_HOST"], e.get("REDIS_PORT") or "6379"))')"
        export REDIS_URL
    fi
}

healthcheck() {
    # PID 1 is the role's process (every role execs). Only the web role serves HTTP.
    # With several web workers PID 1 is their supervisor (python -m chatsvc.core.workers
    # ... -- python manage.py serve): its command line still names `manage.py serve`.
    # Until the task has once been ready it must be ready (/readyz: database, Redis
    # and SQS reachable, at most 3 s), so a release that cannot reach them never
    # turns healthy and the deployment circuit breaker rolls it back. From then on,
    # liveness (/healthz): a later outage of a dependency must not make ECS replace
    # every live task at once (the service degrades and recovers in place).
    if tr '\0' ' ' < /proc/1/cmdline | grep -q 'manage.py serve'; then
        marker="/tmp/chatsvc-was-ready"
        if [ -e "$marker" ]; then
            exec python -c 'import urllib.request
urllib.request.urlopen("http://127.0.0.1:8000/healthz", timeout=4)'
        fi
        # An HTTP 503 raises: a non-zero exit, and no marker.
        python -c 'import urllib.request
urllib.request.urlopen("http://127.0.0.1:8000/readyz", timeout=4)' && touch "$marker"
        exit $?
    fi
    exit 0
}

role="${1:-web}"
case "$role" in
    web)
        compose_urls
        exec python manage.py serve --host 0.0.0.0 --port 8000
        ;;
    worker)
        compose_urls
        exec python manage.py consume_queue
        ;;
    migrate)
        compose_urls
        exec python manage.py migrate --noinput
        ;;
    healthcheck)
        healthcheck
        ;;
    *)
        compose_urls
        exec "$@"
        ;;
esac
