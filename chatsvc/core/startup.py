"""Refuse to run in production on insecure defaults.

The same rules serve three doors: the web process (chatsvc.asgi), the
worker (consume_queue) and `manage.py check --deploy` (a system check).
"""

from django.conf import settings
from django.core.checks import Error, Tags, register
from django.core.exceptions import ImproperlyConfigured


def production_problems() -> list[str]:
    problems = []
    if settings.SECRET_KEY == settings.INSECURE_SECRET_KEY or len(settings.SECRET_KEY) < 50:
        problems.append("SECRET_KEY must be set to a random value of at least 50 characters")
    if settings.INSECURE_SECRET_KEY in settings.SECRET_KEY_FALLBACKS:
        problems.append("SECRET_KEY_FALLBACKS must not hold the development key")
    if any(host == "*" for host in settings.ALLOWED_HOSTS):
        problems.append("ALLOWED_HOSTS must name the service's hosts, not '*'")
    if not settings.CHAT_QUEUE_URL:
        problems.append("CHAT_QUEUE_URL must be set")
    if settings.CHAT_WEBHOOK_ALLOW_PRIVATE:
        # Webhooks could then reach the VPC and the instance metadata endpoint (SSRF).
        problems.append("CHAT_WEBHOOK_ALLOW_PRIVATE must be off")
    return problems


def assert_safe_for_production() -> None:
    if settings.DEBUG:
        return
    if problems := production_problems():
        raise ImproperlyConfigured("Refusing to start with DEBUG off: " + "; ".join(problems))


@register(Tags.security, deploy=True)
def check_production_settings(app_configs, **kwargs):
    """`manage.py check --deploy` fails on what production refuses to start with."""
    return [Error(problem, id="chatsvc.E001") for problem in production_problems()]
