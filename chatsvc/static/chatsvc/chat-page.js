// The chat page's wiring, shared by the demo page and the LTI chat page: a message
// list, presence and error notes, typing, a composer with its pending count. The
// client (chatsvc.js) does the real work: reconnects, resumes, de-duplicates and
// resends unacknowledged messages (docs/client.md). Element ids: messages, status,
// events, typing, pending, composer, body.
export function mountChatPage(client, room, { expiredText = "session expired: reload the page" } = {}) {
  const $ = (id) => document.getElementById(id);

  // #messages holds only p.message elements, in the client's order: `index` is the place.
  client.on("message", (message, index) => {
    const list = $("messages");
    const p = document.createElement("p");
    p.className = "message";
    p.dataset.id = message.id;
    p.textContent = `${message.sender.name}: ${message.body}`;
    list.insertBefore(p, list.children[index] ?? null);
    list.scrollTop = list.scrollHeight;
  });

  client.on("joined", () => { $("status").textContent = "connected"; });
  client.on("status", ({ state, code }) => {
    if (state === "connected") return; // shown once the room is joined
    $("status").textContent = {
      connecting: "connecting…",
      reconnecting: `disconnected (${code}); reconnecting…`,
      stopped: code === 4401 ? expiredText : `stopped (${code})`,
    }[state] ?? state;
  });

  function note(text) {
    const li = document.createElement("li");
    li.textContent = text;
    $("events").prepend(li);
    while ($("events").children.length > 20) $("events").lastChild.remove();
  }
  client.on("presence", ({ user, event }) => note(`${user.name} ${event}`));
  client.on("error", ({ code, message, willRetry }) => {
    if (!willRetry) note(`error ${code}: ${message}`);
  });
  client.on("gap", ({ from, to }) => note(`messages ${from}–${to} could not be loaded`));

  let typingTimer;
  client.on("typing", ({ user }) => {
    $("typing").textContent = `${user.name} is typing…`;
    clearTimeout(typingTimer);
    typingTimer = setTimeout(() => { $("typing").textContent = ""; }, 3000);
  });

  function showPending() {
    const count = client.pending(room).length;
    $("pending").textContent = count ? `(${count} sending…)` : "";
  }
  client.on("ack", showPending);
  client.on("error", showPending);

  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("body");
    if (!input.value.trim()) return;
    client.send(room, input.value); // queued while disconnected, resent until acked
    input.value = "";
    showPending();
  });
  $("body").addEventListener("input", () => client.typing(room)); // at most one per 2 s
}
