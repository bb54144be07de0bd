// The chat page's wiring, shared by the demo page and the LTI chat page: a message
// list, presence and error notes, typing, a composer with its pending count, and the
// content features: edits ("edited"), deletions (a "message deleted" line), reactions
// (chips with counts; a small palette to add one), per-message Edit/Delete for your
// own messages (Delete, and Mute, on any message for moderators) and moderation
// notices; read receipts ("Seen by Bob, Cy" under your latest message; the room is
// marked read while the page is visible) and attachments (download links with name and
// size; with `attachments: true`, image thumbnails and a file picker in the composer).
// The client (chatsvc.js) does the real work: reconnects, resumes, de-duplicates,
// orders events and resends unacknowledged messages and changes (docs/client.md).
// Element ids: messages, status, events, typing, pending, composer, body.
export const PALETTE = ["👍", "❤️", "😂", "🎉", "❓"];
const MUTE_SECONDS = 600; // the moderator's "Mute" button
const MAX_FILES = 10; // attachments per message (the server's limit)
// Shown inline (img src = the download link); anything else is a download link.
const THUMBNAIL_TYPES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"]);

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
.chat-attachments { flex-basis: 100%; display: flex; flex-wrap: wrap; gap: .4rem;
  align-items: flex-end; margin: 0 0 .3rem; font-size: 13px; }
.chat-attachments img { display: block; max-width: 10rem; max-height: 7.5rem;
  border: 1px solid #ddd; border-radius: .3rem; }
.chat-attachments .chat-size, .chat-attach-list .chat-size { color: #777; }
.chat-seen { flex-basis: 100%; text-align: right; color: #777; font-size: 12px;
  margin: 0 0 .2rem; }
.chat-attach-list { list-style: none; display: flex; flex-wrap: wrap; gap: .3rem;
  padding: 0; margin: .3rem 0 0; font-size: 13px; }
.chat-attach-list:empty { display: none; }
.chat-attach-list li { border: 1px solid #ccc; border-radius: .7rem; padding: 0 .2rem 0 .5rem; }
.chat-attach-list button { font: inherit; border: 0; background: none; cursor: pointer;
  color: inherit; padding: 0 .2rem; }
.chat-attach-error { color: #a22; font-size: 13px; margin: .3rem 0 0; }
.chat-attach-error:empty { display: none; }
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

// 68 -> "68 B", 1536 -> "1.5 KB", 3 MiB -> "3.0 MB"
export function fileSize(bytes) {
  if (!Number.isFinite(bytes)) return "";
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

// Only http(s) links from the server are followed or shown.
function safeUrl(url) {
  try {
    const parsed = new URL(url, location.href);
    return parsed.protocol === "https:" || parsed.protocol === "http:" ? parsed.href : null;
  } catch {
    return null;
  }
}

// 600 s -> "10 min"
export function duration(seconds) {
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 90 * 60) return `${Math.round(seconds / 60)} min`;
  if (seconds < 36 * 3600) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} days`;
}

// `attachments`: offer the file picker and show images inline. Leave it off where the
// page's Content-Security-Policy does not allow the storage origin (connect-src, img-src):
// attachments then show as download links.
export function mountChatPage(
  client,
  room,
  { expiredText = "session expired: reload the page", attachments = false } = {},
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
    // An open palette stays open when someone else's change re-renders the message.
    const paletteOpen = entry.querySelector(".chat-palette")?.hidden === false;
    for (const old of entry.querySelectorAll(".chat-tools, .chat-reactions")) old.remove();
    const files = message.deleted ? [] : message.attachments ?? [];
    let box = entry.querySelector(".chat-attachments");
    const key = JSON.stringify(files.map((f) => [f.id, f.url]));
    if (box && box.dataset.key !== key) box = box.remove() ?? null; // thumbnails kept otherwise
    if (!box && files.length) box = attachmentBox(files, key);
    if (message.deleted) {
      const by = message.deleted_by;
      const moderated = by && by.id !== message.sender?.id;
      p.textContent = moderated
        ? `message deleted by ${by.name ?? "a moderator"}`
        : "message deleted";
      entry.querySelector("form.chat-edit")?.remove();
      return;
    }
    const text = message.body ?? "";
    p.textContent = `${message.sender?.name ?? "?"}:${text ? ` ${text}` : ""}`;
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
    palette.hidden = !paletteOpen;
    reactButton.setAttribute("aria-expanded", String(paletteOpen));
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
    if (box) palette.after(box);

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
    (box ?? palette).after(chips);
    if (focused) entry.querySelector(`[data-key="${CSS.escape(focused)}"]`)?.focus();
  }

  // Images as thumbnails (with attachments on), other files as links: name (size).
  function attachmentBox(files, key) {
    const box = document.createElement("div");
    box.className = "chat-attachments";
    box.dataset.key = key;
    box.setAttribute("role", "group");
    box.setAttribute("aria-label", "Attachments");
    for (const file of files) {
      const url = safeUrl(file.url);
      const size = fileSize(file.size);
      const item = document.createElement("span");
      item.className = "chat-attachment";
      item.dataset.id = file.id;
      const link = document.createElement(url ? "a" : "span");
      if (url) {
        link.href = url;
        link.rel = "noopener noreferrer";
        link.download = file.name; // cross-origin: the server's Content-Disposition decides
      }
      if (attachments && url && THUMBNAIL_TYPES.has(file.content_type)) {
        const img = document.createElement("img");
        img.src = url;
        img.alt = file.name;
        img.className = "chat-thumb";
        link.title = `${file.name} (${size})`;
        link.setAttribute("aria-label", `Download ${file.name} (${size})`);
        link.append(img);
        item.append(link);
      } else {
        const icon = document.createElement("span");
        icon.setAttribute("aria-hidden", "true");
        icon.textContent = "📄 ";
        link.className = "chat-file";
        link.textContent = file.name;
        const note = document.createElement("span");
        note.className = "chat-size";
        note.textContent = ` (${size})`;
        item.append(icon, link, note);
      }
      box.append(item);
    }
    return box;
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
  client.on("error", ({ code, message, willRetry, send, change, upload }) => {
    if (willRetry || upload) return; // uploads: their promise says why (see sendWithFiles)
    const about = send ? "send" : change?.type;
    if (send?.attachments) {
      // attachment_rejected and co. name the upload: say which file it was.
      for (const id of send.attachments) {
        if (uploadNames.has(id)) message = message.replaceAll(id, uploadNames.get(id));
      }
      picker?.fail(`${REFUSED.send}: ${message}`);
      if (!$("body").value && send.body) $("body").value = send.body; // the text, back
    }
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

  let uploading = 0; // files being uploaded for messages not sent yet
  function showPending() {
    const count = client.pending(room).length;
    const parts = [];
    if (uploading) parts.push(`uploading ${uploading} ${uploading === 1 ? "file" : "files"}…`);
    if (count) parts.push(`${count} sending…`);
    $("pending").textContent = parts.length ? `(${parts.join(", ")})` : "";
  }
  client.on("ack", showPending);
  client.on("error", showPending);

  // Read receipts: the room is marked read whenever the page shows something newer and
  // is visible (the client sends at most one `read` a second, never a lower seq).
  let readSoon = false;
  function markRead() {
    if (readSoon || document.visibilityState !== "visible") return;
    readSoon = true;
    setTimeout(() => {
      readSoon = false;
      if (document.visibilityState === "visible") client.markRead(room);
    });
  }
  for (const event of ["message", "update", "moderation", "joined"]) client.on(event, markRead);
  client.on("ack", ({ connectionId, type }) => {
    if (connectionId === room && type === "send") markRead(); // your own message, seen
  });
  document.addEventListener("visibilitychange", markRead);

  // "Seen by Bob, Cy" under your latest message, for those whose receipt reached it.
  const seen = document.createElement("div");
  seen.className = "chat-seen";
  function showSeen() {
    const latest = client
      .messages(room)
      .filter((m) => m.sender?.id === me().id && !m.deleted && Number.isInteger(m.seq))
      .at(-1);
    const who = latest
      ? Object.entries(client.readers(room))
          .filter(([id, seq]) => id !== me().id && seq >= latest.seq)
          .map(([id]) => nameOf(id))
      : [];
    const entry = latest && entries.get(latest.id);
    if (!who.length || !entry) {
      seen.remove();
      return;
    }
    seen.textContent = `Seen by ${who.join(", ")}`;
    if (seen.parentNode !== entry || entry.lastChild !== seen) entry.append(seen);
  }
  client.on("read", ({ user }) => {
    names.set(user.id, user.name);
    showSeen();
  });
  for (const event of ["message", "update", "ack"]) client.on(event, showSeen);

  const uploadNames = new Map(); // upload id -> file name, for send errors
  const picker = attachments ? filePicker() : null;

  // The composer's file picker: a button opening the browser's file chooser, the chosen
  // files (each removable) and why the last attempt failed.
  function filePicker() {
    const composer = $("composer");
    const input = document.createElement("input");
    input.type = "file";
    input.multiple = true;
    input.hidden = true;
    input.id = "chat-files";
    const pick = button("📎", "Attach files", () => input.click());
    pick.id = "attach";
    pick.title = "Attach files";
    const submit = composer.querySelector('button[type="submit"], button:not([type])');
    composer.insertBefore(pick, submit);
    composer.append(input);
    const list = document.createElement("ul");
    list.id = "attached";
    list.className = "chat-attach-list";
    list.setAttribute("aria-label", "Files to send");
    const error = document.createElement("p");
    error.id = "attach-error";
    error.className = "chat-attach-error";
    error.setAttribute("role", "alert");
    composer.after(list, error);
    let chosen = [];

    function show() {
      list.replaceChildren();
      for (const file of chosen) {
        const li = document.createElement("li");
        const size = document.createElement("span");
        size.className = "chat-size";
        size.textContent = ` (${fileSize(file.size)})`;
        const remove = button("×", `Remove ${file.name}`, () => {
          chosen = chosen.filter((f) => f !== file);
          show();
          pick.focus();
        });
        li.append(file.name, size, remove);
        list.append(li);
      }
      pick.setAttribute("aria-label", chosen.length ? `Attach files (${chosen.length} chosen)` : "Attach files");
    }
    input.addEventListener("change", () => {
      error.textContent = "";
      for (const file of input.files) {
        const same = (f) => f.name === file.name && f.size === file.size;
        if (chosen.some(same)) continue;
        if (chosen.length >= MAX_FILES) {
          error.textContent = `At most ${MAX_FILES} files per message.`;
          break;
        }
        chosen.push(file);
      }
      input.value = ""; // the same file can be chosen again
      show();
    });
    return {
      take() {
        const files = chosen;
        chosen = [];
        error.textContent = "";
        show();
        return files;
      },
      giveBack(files) {
        chosen = [...files, ...chosen].slice(0, MAX_FILES);
        show();
      },
      fail(text) {
        error.textContent = text;
      },
    };
  }

  // Uploads every file, then sends one message with them all. Nothing is sent if a file
  // is refused: the text and the files are given back, with the reason.
  async function sendWithFiles(body, files) {
    uploading += files.length;
    showPending();
    const results = await Promise.allSettled(files.map((file) => client.upload(room, file)));
    uploading -= files.length;
    const failed = results
      .map((result, i) => [result, files[i]])
      .filter(([result]) => result.status === "rejected");
    if (failed.length) {
      const why = failed.map(([{ reason }, file]) => `${file.name}: ${reason?.message ?? reason}`);
      picker.fail(`Not sent: ${why.join("; ")}`);
      for (const line of why) note(`Attachment refused: ${line}`, "chat-refused");
      picker.giveBack(files);
      if (!$("body").value) $("body").value = body;
    } else {
      const ids = results.map(({ value }, i) => {
        uploadNames.set(value, files[i].name);
        return value;
      });
      client.send(room, body, { attachments: ids }); // resent until acked, like any send
    }
    showPending();
  }

  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("body");
    const files = picker?.take() ?? [];
    if (files.length) {
      sendWithFiles(input.value.trim() ? input.value : "", files);
      input.value = "";
      return;
    }
    if (!input.value.trim()) return;
    client.send(room, input.value); // queued while disconnected, resent until acked
    input.value = "";
    showPending();
  });
  $("body").addEventListener("input", () => client.typing(room)); // at most one per 2 s
}
