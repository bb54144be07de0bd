// The demo page (chatsvc/demo/templates/demo/chat.html), served as a file so the
// Content-Security-Policy can forbid inline scripts.
import { ChatClient } from "../chatsvc/chatsvc.js";
import { mountChatPage } from "../chatsvc/chat-page.js";

const $ = (id) => document.getElementById(id);
const token = JSON.parse($("token").textContent);
const room = JSON.parse($("connection-id").textContent);
const scheme = location.protocol === "https:" ? "wss" : "ws";
const client = new ChatClient({ url: `${scheme}://${location.host}/ws/v1/`, token, rooms: [room] });
window.chatClient = client; // to poke at from the console

// Attachments: the demo view lets the page reach the bucket (local mode: the
// emulator's origin in connect-src and img-src), so uploads and thumbnails work.
mountChatPage(client, room, { attachments: true });
client.connect();
