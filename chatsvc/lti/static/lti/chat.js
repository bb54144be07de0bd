// The LTI chat page (chatsvc/lti/templates/lti/chat.html), served as a file so the
// Content-Security-Policy can forbid inline scripts. The reference client does
// the work (docs/client.md); when the chat token expires it asks /lti/token/ for
// another with the page's ticket, so the page needs no cookie.
import { ChatClient } from "../chatsvc/chatsvc.js";
import { mountChatPage } from "../chatsvc/chat-page.js";

const $ = (id) => document.getElementById(id);
const page = JSON.parse($("lti-chat").textContent);
const room = page.connection_id;
const scheme = location.protocol === "https:" ? "wss" : "ws";

async function getToken() {
  const response = await fetch(page.token_url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ ticket: page.ticket }),
    credentials: "omit",
  });
  if (!response.ok) throw new Error(`token refused (${response.status}): launch the chat again`);
  return (await response.json()).token;
}

const client = new ChatClient({
  url: `${scheme}://${location.host}/ws/v1/`,
  token: page.token,
  getToken,
  rooms: [room],
});
window.chatClient = client; // to poke at from the console

mountChatPage(client, room, { expiredText: "session expired: open the chat again from the course" });
client.connect();
