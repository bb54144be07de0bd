"""Everything under /api/ answers in the API's JSON error shape, whatever fails.

Django and django-ninja answer some failures before or around the views: an
unknown path (404 page), a wrong method (405 text), a body too large
(RequestDataTooBig: a 400 page and an ERROR traceback). This middleware
turns them into `{"error": {code, message}}`, refuses bodies over
API_MAX_BODY_BYTES with 413 before anything reads them, and refuses a JSON
body that is not an object (422) before ninja would read `[]` as `{}`.
"""

import json
from http import HTTPStatus

from django.http import JsonResponse

from chatsvc.api.errors import error_body

API_PREFIX = "/api/"
API_MAX_BODY_BYTES = 64 * 1024
CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


def _error(status: int, code: str, message: str, details: list | None = None) -> JsonResponse:
    return JsonResponse(error_body(code, message, details), status=status)


class ApiErrorShape:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path.startswith(API_PREFIX):
            return self.get_response(request)
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > API_MAX_BODY_BYTES:
            return _error(413, "too_large", f"the body exceeds {API_MAX_BODY_BYTES} bytes")
        if length and request.content_type == "application/json" and not _is_object(request.body):
            detail = {"loc": ["body"], "msg": "must be a JSON object", "type": "dict_type"}
            return _error(422, "invalid_request", "request validation failed", [detail])
        response = self.get_response(request)
        if response.status_code >= 400 and not response.get("Content-Type", "").startswith(
            "application/json"
        ):
            status = response.status_code
            phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
            error = _error(status, CODES.get(status, "http_error"), phrase.lower() or "error")
            if "Allow" in response:  # a 405 says which methods the path has
                error["Allow"] = response["Allow"]
            return error
        return response


def _is_object(body: bytes) -> bool:
    """False only for valid JSON that is not an object (invalid JSON is ninja's 400)."""
    try:
        return isinstance(json.loads(body), dict)
    except (ValueError, RecursionError):
        return True
