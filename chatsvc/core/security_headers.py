"""A Content-Security-Policy on every HTML page (admin, API docs, demo).

Scripts and styles come from the service itself (the API docs' Swagger UI
is served from django-ninja's static files, never a CDN); no inline script
runs; the pages cannot be framed. Inline style attributes stay allowed: the
admin and Swagger UI use them, and they cannot run code.
"""

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


class ContentSecurityPolicy:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if response.get("Content-Type", "").startswith("text/html"):
            response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response
