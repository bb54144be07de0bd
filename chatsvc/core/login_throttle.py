"""Admin login throttling: CHAT_ADMIN_LOGIN_FAILURES failed logins per client
address and user name per 15 minutes, then 429 until the window ends (and
ten times that per address, whatever the names)."""

from django.conf import settings
from django.contrib.auth.signals import user_login_failed
from django.http import HttpResponse

from chatsvc.core.throttle import count, over_limit

WINDOW_SECONDS = 15 * 60
LOGIN_PATH = "/admin/login/"


def _keys(request, username: str) -> list[tuple[str, int]]:
    address = request.META.get("REMOTE_ADDR", "")
    limit = settings.CHAT_ADMIN_LOGIN_FAILURES
    return [(f"login:{address}:{username.lower()}", limit), (f"login:{address}", 10 * limit)]


def record_failure(sender, credentials, request=None, **kwargs) -> None:
    if request is not None:
        for key, limit in _keys(request, credentials.get("username", "")):
            over_limit(key, limit=limit, window_seconds=WINDOW_SECONDS)


class AdminLoginThrottle:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.method == "POST" and request.path == LOGIN_PATH:
            username = request.POST.get("username", "")
            if any(
                count(key, window_seconds=WINDOW_SECONDS) >= limit
                for key, limit in _keys(request, username)
            ):
                response = HttpResponse(
                    "Too many failed logins. Try again later.",
                    status=429,
                    content_type="text/plain",
                )
                response["Retry-After"] = str(WINDOW_SECONDS)
                return response
        return self.get_response(request)


def connect_signals() -> None:
    user_login_failed.connect(record_failure, dispatch_uid="admin-login-throttle")
