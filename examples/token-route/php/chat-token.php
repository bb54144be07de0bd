<?php
// A chat token route for your LMS backend: PHP 8, no dependencies.
//
//   CHATSVC_URL=http://127.0.0.1:8000 CHATSVC_KEY_ID=k... CHATSVC_SIGNING_SECRET=... \
//   CHATSVC_COURSE_ROOMS='{"course-101": "01J..."}' php -S 127.0.0.1:5000 chat-token.php
//
// POST /chat-token?course=<course id>  (the user comes from your session)
//   200 {"token", "expires_at", "connection_id", "ws_url"}
//   404 the course has no chat room, or the user is not enrolled in it
//
// With firebase/php-jwt (composer require firebase/php-jwt), the signing is one call:
//   \Firebase\JWT\JWT::encode($claims, $signingSecret, 'HS256', $keyId);
// The signing secret stays on the server: never send it to a browser.

$chatsvcUrl = rtrim(getenv('CHATSVC_URL'), '/');  // https://chat.example.com
$keyId = getenv('CHATSVC_KEY_ID');                // key_id from create_tenant / rotate_tenant_key
$signingSecret = getenv('CHATSVC_SIGNING_SECRET'); // signing_secret, shown once
$courseRooms = json_decode(getenv('CHATSVC_COURSE_ROOMS') ?: '{}', true);
const TOKEN_TTL_SECONDS = 3600; // at most 86400; chatsvc.js asks for a new one when it expires

// REPLACE with your session's user. Never take the user id from the browser.
function current_user(): ?array
{
    return ['id' => 'u-1001', 'name' => 'Ada Lovelace', 'role' => 'member'];
}

// REPLACE with your course -> ConnectionId lookup and enrolment check.
function room_for_course(array $user, string $courseId): ?string
{
    global $courseRooms;
    return $courseRooms[$courseId] ?? null;
}

function base64url(string $data): string
{
    return rtrim(strtr(base64_encode($data), '+/', '-_'), '=');
}

function mint_chat_token(array $user, array $connectionIds): array
{
    global $keyId, $signingSecret;
    $now = time();
    $header = ['alg' => 'HS256', 'typ' => 'JWT', 'kid' => $keyId];
    $claims = [
        'sub' => $user['id'],                 // your LMS user id, 1-128 characters
        'name' => $user['name'],              // shown to the other members
        'cids' => $connectionIds,             // the rooms this token may join
        'role' => $user['role'] ?? 'member',  // or 'moderator'
        'iat' => $now,
        'exp' => $now + TOKEN_TTL_SECONDS,
    ];
    $flags = JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_THROW_ON_ERROR;
    $signed = base64url(json_encode($header, $flags)) . '.' . base64url(json_encode($claims, $flags));
    $signature = base64url(hash_hmac('sha256', $signed, $signingSecret, true));
    return [$signed . '.' . $signature, $claims['exp']];
}

function reply(int $status, array $body): void
{
    http_response_code($status);
    header('Content-Type: application/json');
    header('Cache-Control: no-store'); // a token is a credential
    echo json_encode($body, JSON_UNESCAPED_SLASHES);
}

$path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);
if ($_SERVER['REQUEST_METHOD'] !== 'POST' || $path !== '/chat-token') {
    reply(404, ['error' => 'not found']);
    return;
}
$user = current_user();
$connectionId = $user === null ? null : room_for_course($user, (string) ($_GET['course'] ?? ''));
if ($connectionId === null) {
    reply(404, ['error' => 'no chat for this course']);
    return;
}
[$token, $expiresAt] = mint_chat_token($user, [$connectionId]);
reply(200, [
    'token' => $token,
    'expires_at' => $expiresAt,
    'connection_id' => $connectionId,
    'ws_url' => preg_replace('/^http/', 'ws', $chatsvcUrl) . '/ws/v1/',
]);
