"""A fake LTI 1.3 platform (an LMS): its own RSA key, its JWKS and an OIDC auth
endpoint served over HTTP from a thread, and the id_tokens it signs.

The auth endpoint answers the tool's login redirect the way an LMS does: an
HTML form, submitted at once, that POSTs `id_token` and `state` to the
`redirect_uri`. The launch's claims come from the `login_hint` (a user of
`USERS`) and the `lti_message_hint` (a JSON object of claim overrides and
test switches, e.g. `{"tamper": true}`).
"""

import html
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from jwcrypto.jwk import JWK

CLAIM = "https://purl.imsglobal.org/spec/lti/claim/"
LIS = "http://purl.imsglobal.org/vocab/lis/v2/"
INSTRUCTOR = LIS + "membership#Instructor"
LEARNER = LIS + "membership#Learner"

USERS = {
    "teacher": {"sub": "t-1", "name": "Tess Teacher", "roles": [INSTRUCTOR]},
    "student": {
        "sub": "s-1",
        "given_name": "Sam",
        "family_name": "Student",
        "roles": [LEARNER],
    },
}


def _key(kid: str) -> JWK:
    return JWK.generate(kty="RSA", size=2048, kid=kid, alg="RS256", use="sig")


class FakePlatform:
    def __init__(self, *, client_id="chat-client", deployment_id="dep-1"):
        self.client_id = client_id
        self.deployment_id = deployment_id
        self.key = _key("platform-key-1")
        self.other_key = _key("platform-key-1")  # same kid, not in the JWKS: a forgery
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.issuer = self.url
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.auth_requests: list[dict] = []

    # --- what the tool's registration needs --------------------------------------

    @property
    def auth_url(self) -> str:
        return self.url + "/auth"

    @property
    def token_url(self) -> str:
        return self.url + "/token"

    @property
    def jwks_url(self) -> str:
        return self.url + "/jwks"

    def jwks(self) -> dict:
        return {"keys": [json.loads(self.key.export_public())]}

    # --- id_tokens -----------------------------------------------------------------

    def claims(self, *, user="teacher", nonce, context_id="course-101", link_id="link-1"):
        now = int(time.time())
        profile = dict(USERS[user])
        roles = profile.pop("roles")
        claims = {
            "iss": self.issuer,
            "aud": self.client_id,
            "iat": now,
            "exp": now + 300,
            "nonce": nonce,
            **profile,
            CLAIM + "message_type": "LtiResourceLinkRequest",
            CLAIM + "version": "1.3.0",
            CLAIM + "deployment_id": self.deployment_id,
            CLAIM + "target_link_uri": "",
            CLAIM + "roles": roles,
            CLAIM + "resource_link": {"id": link_id, "title": "Course chat"},
        }
        if context_id is not None:
            claims[CLAIM + "context"] = {
                "id": context_id,
                "label": context_id.upper(),
                "title": f"Course {context_id}",
                "type": [LIS + "course#CourseOffering"],
            }
        return claims

    def sign(self, claims: dict, *, key: JWK | None = None) -> str:
        key = key or self.key
        pem = key.export_to_pem(private_key=True, password=None)
        return jwt.encode(claims, pem, algorithm="RS256", headers={"kid": key.kid})

    def id_token_for(self, auth_params: dict, **options) -> str:
        """What the auth endpoint signs for a login redirect's query parameters."""
        options = {**json.loads(auth_params.get("lti_message_hint") or "{}"), **options}
        claims = self.claims(
            user=auth_params.get("login_hint", "teacher"),
            nonce=auth_params["nonce"],
            context_id=options.pop("context_id", "course-101"),
        )
        claims.update(options.pop("claims", {}))
        claims[CLAIM + "target_link_uri"] = auth_params.get("redirect_uri", "")
        for name in options.pop("drop", []):
            claims.pop(name, None)
        key = self.other_key if options.pop("forge", False) else None
        token = self.sign(claims, key=key)
        if options.pop("tamper", False):  # change the payload after signing
            header, payload, signature = token.split(".")
            body = dict(claims, name="Mallory")
            payload = jwt.utils.base64url_encode(json.dumps(body).encode()).decode()
            token = f"{header}.{payload}.{signature}"
        return token

    def login_url(self, tool_url: str, *, user="teacher", hint: dict | None = None) -> str:
        """Third-party login initiation, as the LMS's course page starts it."""
        params = {
            "iss": self.issuer,
            "login_hint": user,
            "target_link_uri": tool_url + "/lti/launch/",
            "client_id": self.client_id,
            "lti_deployment_id": self.deployment_id,
        }
        if hint:
            params["lti_message_hint"] = json.dumps(hint)
        return f"{tool_url}/lti/login/?{urlencode(params)}"

    # --- HTTP ------------------------------------------------------------------------

    def _handler(self):
        platform = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, body: str, content_type: str, status=200):
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                url = urlsplit(self.path)
                params = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/jwks":
                    return self._send(json.dumps(platform.jwks()), "application/json")
                if url.path == "/auth":
                    platform.auth_requests.append(params)
                    return self._send(platform.auth_page(params), "text/html")
                if url.path == "/course":  # an LMS page embedding the tool
                    tool, user = params["tool"], params.get("user", "teacher")
                    hint = json.loads(params["hint"]) if "hint" in params else None
                    src = html.escape(platform.login_url(tool, user=user, hint=hint))
                    page = (
                        f"<!doctype html><title>LMS course</title><h1>Course 101</h1>"
                        f'<iframe id="tool" src="{src}" width="800" height="500"></iframe>'
                    )
                    return self._send(page, "text/html")
                return self._send("not found", "text/plain", 404)

        return Handler

    def auth_page(self, params: dict) -> str:
        """The platform's OIDC auth response: form_post of id_token and state."""
        assert params.get("response_mode") == "form_post", params
        assert params.get("client_id") == self.client_id, params
        fields = {"id_token": self.id_token_for(params), "state": params["state"]}
        inputs = "".join(
            f'<input type="hidden" name="{name}" value="{html.escape(value)}">'
            for name, value in fields.items()
        )
        action = html.escape(params["redirect_uri"])
        return (
            f'<!doctype html><form id="launch" method="post" action="{action}">{inputs}</form>'
            '<script>document.getElementById("launch").submit();</script>'
        )

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def new_nonce() -> str:
    return uuid.uuid4().hex
