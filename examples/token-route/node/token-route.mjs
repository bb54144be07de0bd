// A chat token route for your LMS backend: Node 18+, no dependencies.
//
//   CHATSVC_URL=http://127.0.0.1:8000 CHATSVC_KEY_ID=k... CHATSVC_SIGNING_SECRET=... \
//   CHATSVC_COURSE_ROOMS='{"course-101": "01J..."}' node token-route.mjs
//
// POST /chat-token?course=<course id>  (the user comes from your session)
//   200 {"token", "expires_at", "connection_id", "ws_url"}
//   404 the course has no chat room, or the user is not enrolled in it
//
// With the jsonwebtoken package, mintChatToken's signing is one call:
//   jwt.sign({ name, cids, role }, SIGNING_SECRET,
//            { algorithm: "HS256", keyid: KEY_ID, subject: userId, expiresIn: 3600 })
// The signing secret stays on the server: never send it to a browser.
import { createHmac } from "node:crypto";
import { createServer } from "node:http";

const CHATSVC_URL = process.env.CHATSVC_URL.replace(/\/$/, ""); // https://chat.example.com
const KEY_ID = process.env.CHATSVC_KEY_ID; // key_id from create_tenant / rotate_tenant_key
const SIGNING_SECRET = process.env.CHATSVC_SIGNING_SECRET; // signing_secret, shown once
const COURSE_ROOMS = JSON.parse(process.env.CHATSVC_COURSE_ROOMS ?? "{}");
const TOKEN_TTL_SECONDS = 3600; // at most 86400; chatsvc.js asks for a new one when it expires

// REPLACE with your session's user. Never take the user id from the browser.
function currentUser(request) {
  return { id: "u-1001", name: "Ada Lovelace", role: "member" };
}

// REPLACE with your course -> ConnectionId lookup and enrolment check.
function roomForCourse(user, courseId) {
  return Object.hasOwn(COURSE_ROOMS, courseId) ? COURSE_ROOMS[courseId] : null;
}

const wsUrl = () => CHATSVC_URL.replace(/^http/, "ws") + "/ws/v1/";
const base64url = (data) => Buffer.from(data).toString("base64url");

function mintChatToken(user, connectionIds) {
  const now = Math.floor(Date.now() / 1000);
  const header = { alg: "HS256", typ: "JWT", kid: KEY_ID };
  const claims = {
    sub: user.id, // your LMS user id, 1-128 characters
    name: user.name, // shown to the other members
    cids: connectionIds, // the rooms this token may join
    role: user.role ?? "member", // or "moderator"
    iat: now,
    exp: now + TOKEN_TTL_SECONDS,
  };
  const signed = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`;
  const signature = createHmac("sha256", SIGNING_SECRET).update(signed).digest("base64url");
  return { token: `${signed}.${signature}`, expiresAt: claims.exp };
}

function reply(response, status, body) {
  response.writeHead(status, {
    "Content-Type": "application/json",
    "Cache-Control": "no-store", // a token is a credential
  });
  response.end(JSON.stringify(body));
}

const server = createServer((request, response) => {
  const url = new URL(request.url, "http://localhost");
  if (request.method !== "POST" || url.pathname !== "/chat-token") {
    return reply(response, 404, { error: "not found" });
  }
  const user = currentUser(request);
  const connectionId = user && roomForCourse(user, url.searchParams.get("course") ?? "");
  if (!connectionId) return reply(response, 404, { error: "no chat for this course" });
  const { token, expiresAt } = mintChatToken(user, [connectionId]);
  reply(response, 200, {
    token,
    expires_at: expiresAt,
    connection_id: connectionId,
    ws_url: wsUrl(),
  });
});

const port = Number(process.env.PORT ?? 5000);
server.listen(port, "127.0.0.1", () => {
  console.log(`token route on http://127.0.0.1:${port}/chat-token`);
});
