// The chat page's wiring, shared by the demo page and the LTI chat page: a message
// list, presence and error notes, typing, a composer with its pending count, and the
// content features: edits ("edited"), deletions (a "message deleted" line), reactions
// (chips with counts; a small palette to add one), per-message Edit/Delete for your
// own messages (Delete, and Mute, on any message for moderators) and moderation
// notices. The client (chatsvc.js) does the real work: reconnects, resumes,
// de-duplicates, orders events and resends unacknowledged messages and changes
// (docs/client.md). Element ids: messages, status, events, typing, pending, composer, body.
export const PALETTE = ["👍", "❤️", "😂", "🎉", "❓"];
const MUTE_SECONDS = 600; // the moderator's "Mute" button

// Why a refused send or change was refused, in words (the server's message follows).
const REFUSED = { send: "Message not sent", edit: "Edit refused", delete: "Delete refused",
  react: "Reaction refused", moderate: "Moderation refused" };

const STYLE = `
.chat-entry { display: flex; flex-wrap: wrap; align-items: baseline; column-gap: .4rem; }
#messages .chat-entry > p.message { margin: .2rem 0; flex: 1 1 12rem; min-width: 0;
  overflow-wrap: anywhere; }
.chat-entry .message.deleted { color: #777; font-style: italic; }
.chat-entry .edited { color: #777; font-size: 12px; }
.chat-tools { display: flex; gap: .2rem; opacity: .6; }
.chat-tools[hidden] { display: none; }
.chat-entry:hover .chat-tools, .chat-tools:focus-within { opacity: 1; }
.chat-tools button, .chat-chip { font: inherit; font-size: 12px; line-height: 1.4; padding: 0 .4rem;
  border: 1px solid #ccc; border-radius: .7rem; background: #fff; color: inherit; cursor: pointer; }
.chat-tools button[data-armed] { border-color: #c33; color: #c33; }
.chat-reactions { flex-basis: 100%; display: flex; flex-wrap: wrap; gap: .25rem;
  margin-bottom: .2rem; }
.chat-reactions:empty { display: none; }
.chat-chip[aria-pressed="true"] { background: #e6efff; border-color: #7a9be0; }
#messages form.chat-edit { flex-basis: 100%; display: flex; gap: .4rem; margin: .1rem 0 .3rem;
  padding: 0; border: 0; }
#messages form.chat-edit input { flex: 1; }
#events li.chat-refused { color: #a22; }
`;

function addStyle() {
  if (document.getElementById("chat-page-style")) return;
  const style = document.createElement("style");
  style.id = "chat-page-style";
  style.textContent = STYLE;
  document.head.prepend(style); // first: the page's own rules win where they overlap
}

function button(text, label, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  if (label) b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
}

// 600 s -> "10 min"
export function duration(seconds) {
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 90 * 60) return `${Math.round(seconds / 60)} min`;
  if (seconds < 36 * 3600) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} days`;
}

export function mountChatPage(
  client,
  room,
  { expiredText = "session expired: reload the page" } = {},
) {
  const $ = (id) => document.getElementById(id);
  addStyle();
  $("events").setAttribute("aria-live", "polite");

  const entries = new Map(); // message id -> its .chat-entry element
  const names = new Map(); // user id -> name, from messages, members and presence
  const me = () => client.user ?? {};
  const nameOf = (id) => (id === me().id ? "You" : names.get(id) ?? id);

  // #messages holds one div.chat-entry per message, in the client's order: `index` is the
  // place. Each holds p.message (the text: "Name: body"), its tools and reaction chips.
  client.on("message", (message, index) => {
    const list = $("messages");
    const entry = document.createElement("div");
    entry.className = "chat-entry";
    entry.dataset.id = message.id;
    entries.set(message.id, entry);
    if (message.sender) names.set(message.sender.id, message.sender.name);
    render(entry, message);
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.insertBefore(entry, list.children[index] ?? null);
    if (atBottom || message.sender?.id === me().id) list.scrollTop = list.scrollHeight;
  });

  // Edited, deleted or reacted to (live, or a fresher copy from history).
  client.on("update", (message) => {
    const entry = entries.get(message.id);
    if (entry) render(entry, message);
  });

  function render(entry, message) {
    // Keep keyboard focus on the same control across the re-render.
    const active = document.activeElement;
    const focused = entry.contains(active) ? active.dataset.key : null;
    let p = entry.querySelector("p.message");
    if (!p) {
      p = document.createElement("p");
      p.className = "message";
      p.dataset.id = message.id;
      entry.prepend(p);
    }
    const mine = message.sender?.id === me().id;
    const moderator = me().role === "moderator";
    p.classList.toggle("deleted", !!message.deleted);
    for (const old of entry.querySelectorAll(".chat-tools, .chat-reactions")) old.remove();
    if (message.deleted) {
      const by = message.deleted_by;
      const moderated = by && by.id !== message.sender?.id;
      p.textContent = moderated
        ? `message deleted by ${by.name ?? "a moderator"}`
        : "message deleted";
      entry.querySelector("form.chat-edit")?.remove();
      return;
    }
    p.textContent = `${message.sender?.name ?? "?"}: ${message.body ?? ""}`;
    if (message.edited_at) {
      const mark = document.createElement("span");
      mark.className = "edited";
      mark.textContent = " (edited)";
      mark.title = `edited ${new Date(message.edited_at).toLocaleString()}`;
      p.append(mark);
    }
    const who = message.sender?.name ?? "someone";

    const tools = document.createElement("span");
    tools.className = "chat-tools";
    const palette = document.createElement("span");
    palette.className = "chat-tools chat-palette";
    palette.hidden = true;
    const reactButton = button("☺+", `Add a reaction to ${who}'s message`, () => {
      palette.hidden = !palette.hidden;
      reactButton.setAttribute("aria-expanded", String(!palette.hidden));
      if (!palette.hidden) palette.querySelector("button")?.focus();
    });
    reactButton.dataset.key = "react";
    reactButton.setAttribute("aria-expanded", "false");
    tools.append(reactButton);
    for (const emoji of PALETTE) {
      const b = button(emoji, `React with ${emoji}`, () => {
        palette.hidden = true;
        reactButton.setAttribute("aria-expanded", "false");
        react(message, emoji);
      });
      b.dataset.key = `add ${emoji}`;
      palette.append(b);
    }
    if (mine) {
      const edit = button("Edit", "Edit your message", () => openEditor(entry, message));
      edit.dataset.key = "edit";
      tools.append(edit);
    }
    if (mine || moderator) {
      const label = mine ? "Delete your message" : `Delete ${who}'s message`;
      const del = button("Delete", label, () => {
        if (!del.dataset.armed) {
          // Two clicks: the first arms it for a few seconds.
          del.dataset.armed = "1";
          del.textContent = "Confirm delete";
          del.setAttribute("aria-label", `Confirm: ${label}`);
          setTimeout(() => {
            delete del.dataset.armed;
            del.textContent = "Delete";
            del.setAttribute("aria-label", label);
          }, 4000);
          return;
        }
        del.disabled = true;
        client.deleteMessage(room, message.id).catch(() => {}); // refusals: the error note
      });
      del.dataset.key = "delete";
      tools.append(del);
    }
    if (moderator && !mine && message.sender) {
      const mute = button("Mute", `Mute ${who} for ${duration(MUTE_SECONDS)}`, () => {
        client.moderate(room, "mute", message.sender.id, { seconds: MUTE_SECONDS }).catch(() => {});
      });
      mute.dataset.key = "mute";
      tools.append(mute);
    }
    p.after(tools, palette);

    const chips = document.createElement("div");
    chips.className = "chat-reactions";
    chips.setAttribute("role", "group");
    chips.setAttribute("aria-label", "Reactions");
    for (const { emoji, count, user_ids: users = [] } of message.reactions ?? []) {
      const yours = users.includes(me().id);
      const label = `${emoji}: ${count} ${count === 1 ? "reaction" : "reactions"}` +
        (yours ? ", yours included. Take yours back" : `. React with ${emoji}`);
      const chip = button(`${emoji} ${count}`, label, () => react(message, emoji));
      chip.className = "chat-chip";
      chip.dataset.emoji = emoji;
      chip.dataset.key = `chip ${emoji}`;
      chip.setAttribute("aria-pressed", String(yours));
      chip.title = users.map(nameOf).join(", ");
      chips.append(chip);
    }
    palette.after(chips);
    if (focused) entry.querySelector(`[data-key="${CSS.escape(focused)}"]`)?.focus();
  }

  function react(message, emoji) {
    client.react(room, message.id, emoji).catch(() => {}); // refusals: the error note
  }

  function openEditor(entry, message) {
    let form = entry.querySelector("form.chat-edit");
    if (!form) {
      form = document.createElement("form");
      form.className = "chat-edit";
      const input = document.createElement("input");
      input.setAttribute("aria-label", "Edit your message");
      input.maxLength = 4000;
      input.autocomplete = "off";
      const close = () => {
        form.remove();
        entry.querySelector('[data-key="edit"]')?.focus();
      };
      const cancel = button("Cancel", "Cancel the edit", close);
      const save = document.createElement("button");
      save.type = "submit";
      save.textContent = "Save";
      form.append(input, save, cancel);
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        const current = client.messages(room).find((m) => m.id === message.id) ?? message;
        const body = input.value;
        if (body.trim() && body !== current.body) {
          client.edit(room, message.id, body).catch(() => {}); // refusals: the error note
        }
        close();
      });
      input.addEventListener("keydown", (event) => {
        if (event.key === "Escape") close();
      });
      entry.append(form);
    }
    const input = form.querySelector("input");
    input.value = message.body ?? "";
    input.focus();
    input.select();
  }

  client.on("joined", ({ members }) => {
    $("status").textContent = "connected";
    for (const member of members ?? []) names.set(member.id, member.name);
  });
  client.on("status", ({ state, code }) => {
    if (state === "connected") return; // shown once the room is joined
    $("status").textContent = {
      connecting: "connecting…",
      reconnecting: `disconnected (${code}); reconnecting…`,
      stopped: code === 4401 ? expiredText : `stopped (${code})`,
    }[state] ?? state;
  });

  function note(text, className) {
    const li = document.createElement("li");
    li.textContent = text;
    if (className) li.className = className;
    $("events").prepend(li);
    while ($("events").children.length > 20) $("events").lastChild.remove();
  }
  client.on("presence", ({ user, event }) => {
    names.set(user.id, user.name);
    note(`${user.name} ${event}`);
  });
  client.on("error", ({ code, message, willRetry, send, change }) => {
    if (willRetry) return;
    const about = send ? "send" : change?.type;
    if (about && REFUSED[about]) note(`${REFUSED[about]}: ${message}`, "chat-refused");
    else note(`error ${code}: ${message}`);
  });
  client.on("gap", ({ from, to }) => note(`messages ${from}–${to} could not be loaded`));
  client.on("left", ({ reason }) => {
    if (reason === "removed") note("You were removed from this room.", "chat-refused");
    else if (reason === "closed") note("The room was closed.", "chat-refused");
  });

  // "Ada was muted for 10 min by Tutor (reason: spam)"
  client.on("moderation", ({ action, user, by, until, reason, ts }) => {
    const self = user.id === me().id;
    const who = `${self ? "You" : nameOf(user.id)} ${self ? "were" : "was"}`;
    let text = `${who} ${action === "kicked" ? "removed from the room" : action}`;
    if (until && (action === "muted" || action === "banned")) {
      text += ` for ${duration((Date.parse(until) - Date.parse(ts)) / 1000)}`;
    }
    if (by?.name) text += ` by ${by.id === me().id ? "you" : by.name}`;
    if (reason) text += ` (reason: ${reason})`;
    note(`${text}.`, self && action !== "unmuted" && action !== "unbanned" ? "chat-refused" : "");
  });

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
