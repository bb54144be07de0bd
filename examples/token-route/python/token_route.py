"""A chat token route for your LMS backend: Python standard library + PyJWT.

    pip install PyJWT
    CHATSVC_URL=http://127.0.0.1:8000 CHATSVC_KEY_ID=k... CHATSVC_SIGNING_SECRET=... \
    CHATSVC_COURSE_ROOMS='{"course-101": "01J..."}' python token_route.py

POST /chat-token?course=<course id>  (the user comes from your session)
  200 {"token", "expires_at", "connection_id", "ws_url"}
  404 the course has no chat room, or the user is not enrolled in it

The browser gives the token to chatsvc.js (docs/integration.md). The signing
secret stays on the server: never send it to a browser.
"""

import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import jwt  # PyJWT

CHATSVC_URL = os.environ["CHATSVC_URL"].rstrip("/")  # https://chat.example.com
KEY_ID = os.environ["CHATSVC_KEY_ID"]  # key_id from create_tenant / rotate_tenant_key
SIGNING_SECRET = os.environ["CHATSVC_SIGNING_SECRET"]  # signing_secret, shown once
COURSE_ROOMS = json.loads(os.environ.get("CHATSVC_COURSE_ROOMS", "{}"))
TOKEN_TTL_SECONDS = 3600  # at most 86400; chatsvc.js asks for a new one when it expires


def current_user(request):
    """REPLACE with your session's user. Never take the user id from the browser."""
    return {"id": "u-1001", "name": "Ada Lovelace", "role": "member"}


def room_for_course(user, course_id):
    """REPLACE with your course -> ConnectionId lookup and enrolment check."""
    return COURSE_ROOMS.get(course_id)


def ws_url():
    return CHATSVC_URL.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + "/ws/v1/"


def mint_chat_token(user, connection_ids):
    now = int(time.time())
    claims = {
        "sub": user["id"],  # your LMS user id, 1-128 characters
        "name": user["name"],  # shown to the other members
        "cids": connection_ids,  # the rooms this token may join
        "role": user.get("role", "member"),  # or "moderator"
        "iat": now,
        "exp": now + TOKEN_TTL_SECONDS,
    }
    token = jwt.encode(claims, SIGNING_SECRET, algorithm="HS256", headers={"kid": KEY_ID})
    return token, claims["exp"]


class TokenRoute(BaseHTTPRequestHandler):
    def do_POST(self):
        url = urlsplit(self.path)
        if url.path != "/chat-token":
            return self.reply(404, {"error": "not found"})
        user = current_user(self)
        course_id = parse_qs(url.query).get("course", [""])[0]
        connection_id = room_for_course(user, course_id)
        if user is None or connection_id is None:
            return self.reply(404, {"error": "no chat for this course"})
        token, expires_at = mint_chat_token(user, [connection_id])
        self.reply(
            200,
            {
                "token": token,
                "expires_at": expires_at,
                "connection_id": connection_id,
                "ws_url": ws_url(),
            },
        )

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")  # a token is a credential
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "5000"))
    print(f"token route on http://127.0.0.1:{port}/chat-token", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), TokenRoute).serve_forever()
