"""One JSON error shape for the whole API: {"error": {code, message, details?}}."""

import logging

from botocore.exceptions import BotoCoreError, ClientError
from django.http import Http404
from ninja.errors import AuthenticationError, HttpError, ValidationError

from chatsvc.streams import StreamUnavailable


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list | None = None,
        *,
        retry_after: int | None = None,
    ):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details
        self.retry_after = retry_after


logger = logging.getLogger(__name__)


def error_body(code: str, message: str, details: list | None = None) -> dict:
    error = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return {"error": error}


def _clean(detail: dict) -> dict:
    # pydantic's ctx may hold exception objects that are not JSON.
    return {key: detail[key] for key in ("loc", "msg", "type") if key in detail}


def public_loc(loc: tuple, model) -> tuple:
    """A pydantic error location in one of ninja's parameter models, as the client
    sees it: a flattened query schema's ("query", "limit") is ("limit",), also
    for nested locations (("query", "metadata", 0) -> ("metadata", 0)); a body
    schema's ("payload", "metadata") is ("metadata",)."""
    reverse = model.__ninja_flatten_map_reverse__
    for length in range(len(loc), 0, -1):
        if loc[:length] in reverse:
            return reverse[loc[:length]] + loc[length:]
    if model.__ninja_param_source__ == "body" and len(model.model_fields) == 1 and len(loc) > 1:
        return loc[1:]  # the one body parameter (the view's `payload`) is the whole body
    return loc


def install(api) -> None:
    def respond(request, status, *args):
        return api.create_response(request, error_body(*args), status=status)

    @api.exception_handler(ApiError)
    def api_error(request, exc: ApiError):
        response = respond(request, exc.status, exc.code, exc.message, exc.details)
        if exc.retry_after is not None:
            response["Retry-After"] = str(exc.retry_after)
        return response

    @api.exception_handler(ValidationError)
    def validation_error(request, exc: ValidationError):
        details = [_clean(d) for d in exc.errors]
        return respond(request, 422, "invalid_request", "request validation failed", details)

    @api.exception_handler(AuthenticationError)
    def authentication_error(request, exc):
        return respond(request, 401, "unauthorized", "missing or invalid API key")

    @api.exception_handler(Http404)
    def not_found(request, exc):
        return respond(request, 404, "not_found", "no such resource")

    @api.exception_handler(BotoCoreError)
    @api.exception_handler(ClientError)
    @api.exception_handler(StreamUnavailable)
    def aws_unavailable(request, exc):
        logger.warning("a backing service failed in the API", extra={"error": str(exc)})
        return respond(request, 503, "unavailable", "a backing service is unavailable; retry")

    @api.exception_handler(HttpError)
    def http_error(request, exc: HttpError):
        return respond(request, exc.status_code, "http_error", str(exc))
