"""Refuse to run in production on insecure defaults."""

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def assert_safe_for_production() -> None:
    if settings.DEBUG:
        return
    problems = []
    if settings.SECRET_KEY == settings.INSECURE_SECRET_KEY or len(settings.SECRET_KEY) < 50:
        problems.append("SECRET_KEY must be set to a random value of at least 50 characters")
    if any(host == "*" for host in settings.ALLOWED_HOSTS):
        problems.append("ALLOWED_HOSTS must name the service's hosts, not '*'")
    if not settings.CHAT_QUEUE_URL:
        problems.append("CHAT_QUEUE_URL must be set")
    if problems:
        raise ImproperlyConfigured("Refusing to start with DEBUG off: " + "; ".join(problems))
