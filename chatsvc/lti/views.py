"""The LTI 1.3 endpoints: OIDC login initiation, launch, the tool's JWKS and
configuration, and the chat page's token refresh.

Validation is pylti1p3's (through django-lti): the state cookie, the nonce
issued at login, the registration (issuer + client id = audience), the
signature against the platform's JWKS, the deployment id and the message
type. On top of it: exp and iat required (60 s leeway), the nonce used once,
the deployment activated by an operator, the registration assigned to an
active tenant. No Django session is used: after the launch the page holds a
chat token and a signed ticket to renew it.
"""

import json
import logging
import time

import jwt
import requests
from django.core import signing
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from lti_tool.models import Key, LtiRegistration
from lti_tool.utils import DjangoToolConfig
from pylti1p3.contrib.django import DjangoCacheDataStorage, DjangoMessageLaunch, DjangoOIDCLogin
from pylti1p3.exception import LtiException, OIDCException

from chatsvc.core.security_headers import CONTENT_SECURITY_POLICY
from chatsvc.lti import services
from chatsvc.lti.models import Platform
from chatsvc.realtime import tokens
from chatsvc.rooms.models import Room
from chatsvc.rooms.selectors import is_removed, revocation_of
from chatsvc.tenants.selectors import current_signing_key

logger = logging.getLogger(__name__)

LEEWAY_SECONDS = 60
CHAT_TOKEN_TTL_SECONDS = 900  # the page renews it with its ticket
TICKET_MAX_AGE_SECONDS = 8 * 3600  # how long a launched page may keep renewing
TICKET_SALT = "chatsvc.lti.ticket"
RESOURCE_LINK_REQUEST = "LtiResourceLinkRequest"
JWKS_FETCH_TIMEOUT_SECONDS = 5


class _PlatformHttp(requests.Session):
    """pylti1p3 fetches the platform's JWKS with no timeout; give it one."""

    def request(self, *args, **kwargs):
        kwargs.setdefault("timeout", JWKS_FETCH_TIMEOUT_SECONDS)
        return super().request(*args, **kwargs)


# --- helpers ---------------------------------------------------------------------


class ToolConfig(DjangoToolConfig):
    """django-lti's lookup, except that the login URL naming a registration
    (`/lti/login/<uuid>/`) also works for platforms that send no client_id."""

    def find_registration_by_params(self, iss, client_id, *args, **kwargs):
        if client_id is None and self.registration_uuid is not None:
            return self.find_registration_by_issuer(iss)
        return super().find_registration_by_params(iss, client_id, *args, **kwargs)


def ensure_tool_key() -> None:
    """The tool needs one active key pair (its JWKS); make it on first use."""
    if not Key.objects.active().exists():
        Key.objects.generate()


def _policy(frame_origins: list[str]) -> str:
    ancestors = " ".join(frame_origins) if frame_origins else "'none'"
    return CONTENT_SECURITY_POLICY.replace("frame-ancestors 'none'", f"frame-ancestors {ancestors}")


def _frameable(response: HttpResponse, frame_origins: list[str]) -> HttpResponse:
    """Only the registered platform's pages may embed this response."""
    response["Content-Security-Policy"] = _policy(frame_origins)
    response["Cache-Control"] = "no-store"
    return response


class Refusal(Exception):
    """A launch or login refused: a code for logs and tests, words for people."""

    def __init__(self, status: int, code: str, title: str, detail: str = ""):
        super().__init__(code)
        self.status, self.code, self.title, self.detail = status, code, title, detail


def _error_page(request, refusal: Refusal, frame_origins: list[str]) -> HttpResponse:
    logger.warning(
        "lti launch refused", extra={"code": refusal.code, "detail": refusal.detail[:300]}
    )
    response = render(
        request,
        "lti/error.html",
        {"code": refusal.code, "title": refusal.title, "detail": refusal.detail},
        status=refusal.status,
    )
    response["X-LTI-Error"] = refusal.code
    return _frameable(response, frame_origins)


def _unverified_claims(request) -> dict:
    try:
        claims = jwt.decode(request.POST.get("id_token", ""), options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return {}
    return claims if isinstance(claims, dict) else {}


def _client_id(claims: dict) -> str | None:
    aud = claims.get("aud")
    return aud[0] if isinstance(aud, list) and aud else aud if isinstance(aud, str) else None


def _platform_for(issuer: object, client_id: object) -> Platform | None:
    if not isinstance(issuer, str) or not isinstance(client_id, str):
        return None
    return (
        Platform.objects.select_related("registration", "tenant")
        .filter(registration__issuer=issuer, registration__client_id=client_id)
        .first()
    )


def _frame_origins_for(issuer: object, client_id: object) -> list[str]:
    platform = _platform_for(issuer, client_id)
    return platform.allowed_frame_origins if platform else []


def _launch_url(request) -> str:
    return request.build_absolute_uri(reverse("lti:launch"))


# --- login initiation --------------------------------------------------------------


@csrf_exempt
@xframe_options_exempt
@require_http_methods(["GET", "POST"])
def login(request, registration_uuid=None):
    """OIDC third-party login initiation: redirect to the platform's auth endpoint."""
    params = request.POST if request.method == "POST" else request.GET
    frame_origins = _frame_origins_for(params.get("iss"), params.get("client_id"))
    ensure_tool_key()
    oidc = DjangoOIDCLogin(
        request,
        ToolConfig(registration_uuid),
        launch_data_storage=DjangoCacheDataStorage(),
    )
    try:
        # redirect_uri is always this tool's launch URL, whatever target_link_uri says.
        response = oidc.redirect(_launch_url(request))
    except (OIDCException, LtiException) as exc:
        refusal = Refusal(
            400,
            "unknown_platform",
            "This LMS is not registered with the chat service.",
            f"{exc} (issuer {params.get('iss')!r}, client id {params.get('client_id')!r}). "
            "An administrator registers the platform in the chat service's admin.",
        )
        return _error_page(request, refusal, frame_origins)
    return _frameable(response, frame_origins)


# --- launch ------------------------------------------------------------------------


class ChatMessageLaunch(DjangoMessageLaunch):
    """pylti1p3's launch with exp and iat required and a small clock leeway."""

    def validate_jwt_signature(self):
        public_key, algorithm = self.get_public_key()
        try:
            jwt.decode(
                self._get_id_token(),
                public_key,
                algorithms=[algorithm],
                options={"verify_aud": False, "require": ["exp", "iat"]},
                leeway=LEEWAY_SECONDS,
            )
        except jwt.InvalidTokenError as exc:
            raise LtiException(f"Can't decode id_token: {exc}") from exc
        return self


def _refusal_for(exc: LtiException, claims: dict) -> Refusal:
    """pylti1p3 says what failed in words; turn them into codes and advice."""
    message, cause = str(exc), exc.__cause__
    if isinstance(cause, jwt.ExpiredSignatureError):
        return Refusal(
            403,
            "token_expired",
            "The launch has expired.",
            "Go back to the course and open the chat again.",
        )
    if isinstance(cause, jwt.ImmatureSignatureError):
        return Refusal(
            403,
            "token_not_yet_valid",
            "The launch is dated in the future.",
            "The LMS's clock and the chat service's clock disagree by more than a minute.",
        )
    if isinstance(cause, jwt.MissingRequiredClaimError):
        return Refusal(400, "claim_missing", "The launch is incomplete.", message)
    if isinstance(cause, jwt.InvalidSignatureError) or message == "Unable to find public key":
        return Refusal(
            403,
            "bad_signature",
            "The launch's signature is not valid.",
            f"{message}. The id_token was not signed by a key in the platform's JWKS "
            "(check the registration's keyset URL).",
        )
    if message.startswith("Error during fetch URL") or message.startswith("Invalid response"):
        return Refusal(
            502,
            "platform_jwks_unavailable",
            "The LMS's keys could not be read.",
            f"{message[:300]}. Check the registration's keyset URL.",
        )
    if message.startswith("Can't decode id_token"):
        return Refusal(403, "bad_token", "The launch token could not be verified.", message)
    if message == "Registration not found.":
        issuer = claims.get("iss")
        known_issuer = LtiRegistration.objects.active().filter(issuer=issuer).exists()
        if known_issuer:
            return Refusal(
                403,
                "wrong_audience",
                "The launch is addressed to another tool.",
                f"No active registration of issuer {issuer!r} has client id "
                f"{_client_id(claims)!r} (the token's audience).",
            )
        return Refusal(
            403,
            "unknown_platform",
            "This LMS is not registered with the chat service.",
            f"No active registration for issuer {issuer!r}.",
        )
    if message in ("State not found", "Missing state param"):
        return Refusal(
            400,
            "state_mismatch",
            "This launch cannot be matched to your browser.",
            "The login cookie is missing or expired: your browser may block cookies in "
            "embedded pages. Open the chat in a new window (or let the LMS do so), or "
            "launch it again from the course.",
        )
    if message in ("Invalid Nonce", '"nonce" is empty'):
        return Refusal(
            403,
            "bad_nonce",
            "The launch was not started by this chat service.",
            "Its nonce is unknown or expired; launch the chat again from the course.",
        )
    if "message type" in message.lower() or message == "Message validation failed":
        return Refusal(400, "bad_message", "The launch message is not valid.", message)
    return Refusal(400, "launch_invalid", "The launch is not valid.", message)


def _validated_launch(request) -> tuple[Platform, dict]:
    claims = _unverified_claims(request)
    try:
        # Built inside the try: over HTTPS its storage wants pylti1p3's session
        # cookie, which browsers that block cookies in frames never send.
        launch = ChatMessageLaunch(
            request,
            DjangoToolConfig(),
            launch_data_storage=DjangoCacheDataStorage(),
            requests_session=_PlatformHttp(),
        )
        launch.validate()
    except LtiException as exc:
        if "cookie" in str(exc) and "session" in str(exc):
            raise Refusal(
                403,
                "state_mismatch",
                "Your browser did not keep the chat's sign-in cookie.",
                "Browsers that block cookies in frames lose it; allow them for this "
                "site, or open the course in a new window.",
            ) from exc
        raise _refusal_for(exc, claims) from exc
    claims = launch.get_launch_data()
    # Spent before any check of ours: a launch refused below (an inactive
    # deployment) can never be replayed once an operator activates it.
    nonce_fresh = services.consume_nonce(
        issuer=claims.get("iss"), nonce=str(claims.get("nonce")), expires_at=claims.get("exp")
    )
    tool_config = launch.get_tool_conf()
    registration, deployment = tool_config.registration, tool_config.deployment

    aud = claims.get("aud")
    if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != registration.client_id:
        raise Refusal(
            403,
            "wrong_audience",
            "The launch is addressed to another tool.",
            "Several audiences and no azp naming this tool.",
        )
    if deployment is None or not deployment.is_active:
        raise Refusal(
            403,
            "unknown_deployment",
            "This deployment of the chat is not registered.",
            f"Deployment id {claims.get(services.CLAIM + 'deployment_id')!r} of "
            f"{registration.issuer!r} is not active. An administrator activates it in "
            "the chat service's admin (LTI registrations → deployments).",
        )
    if not nonce_fresh:
        raise Refusal(
            403,
            "replayed_nonce",
            "This launch was already used.",
            "A launch can be used once. Open the chat again from the course.",
        )
    platform = (
        Platform.objects.select_related("tenant", "registration")
        .filter(registration=registration)
        .first()
    )
    if platform is None:
        raise Refusal(
            403,
            "no_tenant",
            "This LMS is not assigned to a chat tenant.",
            "An administrator assigns the registration to a tenant in the admin.",
        )
    if not platform.tenant.is_active:
        raise Refusal(403, "tenant_disabled", "The chat service is disabled for this LMS.")
    message_type = claims.get(services.CLAIM + "message_type")
    if message_type != RESOURCE_LINK_REQUEST:
        raise Refusal(
            400,
            "unsupported_message",
            "The chat cannot be used this way.",
            f"{message_type!r} is not supported; add the chat as a link (resource link).",
        )
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise Refusal(
            400,
            "anonymous_launch",
            "The chat needs to know who you are.",
            "The launch has no user (sub); anonymous launches cannot chat.",
        )
    return platform, claims


def _mint(*, platform: Platform, user_id: str, name: str, role: str, room: Room):
    signing_key = current_signing_key(tenant=platform.tenant)
    if signing_key is None:
        raise Refusal(
            503,
            "no_signing_key",
            "The chat service is not ready for this LMS.",
            "The tenant has no usable signing key.",
        )
    key, secret = signing_key
    token, _ = tokens.mint(
        key=key,
        signing_secret=secret,
        user_id=user_id,
        name=name,
        connection_ids=[room.connection_id],
        role=role,
        ttl_seconds=CHAT_TOKEN_TTL_SECONDS,
    )
    return token


@csrf_exempt
@xframe_options_exempt
@never_cache
@require_POST
def launch(request):
    """The platform POSTs the id_token here (form_post); answer with the chat page."""
    claims = _unverified_claims(request)
    frame_origins = _frame_origins_for(claims.get("iss"), _client_id(claims))
    try:
        platform, claims = _validated_launch(request)
        frame_origins = platform.allowed_frame_origins
        room = services.room_for_launch(platform=platform, claims=claims)
        if not room.is_open:
            raise Refusal(403, "room_closed", "This course's chat has been closed.")
        user_id = services.chat_user_id(platform=platform, sub=claims["sub"])
        if is_removed(connection_id=room.connection_id, user_id=user_id):
            raise Refusal(
                403,
                "removed",
                "You were removed from this chat.",
                "A moderator or the LMS removed you; ask them to re-admit you.",
            )
        name = services.display_name(claims)
        role = services.chat_role(claims.get(services.CLAIM + "roles"))
        token = _mint(platform=platform, user_id=user_id, name=name, role=role, room=room)
    except Refusal as refusal:
        return _error_page(request, refusal, frame_origins)
    ticket = signing.dumps(
        {
            "p": platform.pk,
            "u": user_id,
            "n": name,
            "r": role,
            "c": room.connection_id,
            "t": int(time.time()),  # the launch: a user revocation after it ends renewals
        },
        salt=TICKET_SALT,
    )
    page = {
        "token": token,
        "ticket": ticket,
        "connection_id": room.connection_id,
        "token_url": reverse("lti:token"),
    }
    response = render(
        request,
        "lti/chat.html",
        {"page": page, "name": name, "role": role, "title": room.title or "Chat"},
    )
    return _frameable(response, frame_origins)


@csrf_exempt
@never_cache
@require_POST
def token(request):
    """A fresh chat token for a launched page (its ticket), while the ticket is valid."""
    try:
        body = json.loads(request.body or b"{}")
        ticket = signing.loads(
            body.get("ticket", ""), salt=TICKET_SALT, max_age=TICKET_MAX_AGE_SECONDS
        )
    except (ValueError, AttributeError, signing.BadSignature):
        return JsonResponse({"error": "ticket invalid or expired: launch again"}, status=401)
    platform = (
        Platform.objects.select_related("tenant", "registration").filter(pk=ticket["p"]).first()
    )
    room = Room.objects.filter(connection_id=ticket["c"]).first()
    if (
        platform is None
        or not platform.registration.is_active
        or not platform.tenant.is_active
        or room is None
        or room.tenant_id != platform.tenant_id
        or not room.is_open
    ):
        return JsonResponse({"error": "no longer allowed: launch again"}, status=403)
    revocation = revocation_of(tenant_id=platform.tenant_id, user_id=ticket["u"])
    if (revocation is not None and revocation.refuses(ticket.get("t", 0))) or is_removed(
        connection_id=room.connection_id, user_id=ticket["u"]
    ):
        return JsonResponse({"error": "revoked or removed: launch again"}, status=403)
    try:
        chat_token = _mint(
            platform=platform, user_id=ticket["u"], name=ticket["n"], role=ticket["r"], room=room
        )
    except Refusal as refusal:
        return JsonResponse({"error": refusal.code}, status=refusal.status)
    return JsonResponse({"token": chat_token})


# --- what the platform's administrator needs ----------------------------------------


@require_GET
def jwks(request):
    """The tool's public keys (JWKS)."""
    ensure_tool_key()
    response = JsonResponse(Key.objects.as_jwks())
    response["Access-Control-Allow-Origin"] = "*"
    return response


def tool_urls(request) -> dict:
    absolute = request.build_absolute_uri
    return {
        "login": absolute(reverse("lti:login")),
        "launch": absolute(reverse("lti:launch")),
        "jwks": absolute(reverse("lti:jwks")),
        "config": absolute(reverse("lti:config")),
        "setup": absolute(reverse("lti:setup")),
    }


@require_GET
def config(request):
    """Canvas's developer key JSON ("Paste JSON" or "Enter URL")."""
    urls = tool_urls(request)
    placement = {"message_type": RESOURCE_LINK_REQUEST, "target_link_uri": urls["launch"]}
    return JsonResponse(
        {
            "title": "Course chat (chatsvc)",
            "description": "Real-time chat for the course: one room per course.",
            "oidc_initiation_url": urls["login"],
            "target_link_uri": urls["launch"],
            "public_jwk_url": urls["jwks"],
            "scopes": [],
            "extensions": [
                {
                    "platform": "canvas.instructure.com",
                    "domain": request.get_host().split(":")[0],
                    "tool_id": "chatsvc",
                    "privacy_level": "public",
                    "settings": {
                        "text": "Chat",
                        "placements": [
                            {**placement, "placement": "course_navigation", "text": "Chat"},
                            {**placement, "placement": "link_selection", "text": "Chat"},
                        ],
                    },
                }
            ],
            "custom_fields": {},
        }
    )


@require_GET
def setup(request):
    """The values an LMS administrator pastes (Moodle, Canvas, any LTI 1.3 platform)."""
    return render(request, "lti/setup.html", {"urls": tool_urls(request)})
