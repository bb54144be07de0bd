// chatsvc reference client: one ES module, no build step, no dependencies.
// It speaks protocol v1 (docs/protocol.md); its API is documented in docs/client.md.
//
//   import { ChatClient } from "/static/chatsvc/chatsvc.js";
//   const client = new ChatClient({ url: "wss://host/ws/v1/", token, getToken, rooms: [id] });
//   client.on("message", (message, index) => ...);
//   client.connect();
//   client.send(id, "hello");
//   client.on("update", (message, index) => ...); // edited, deleted or reacted to
//   await client.edit(id, messageId, "hello!");
//   client.markRead(id);                          // seen up to the newest: a read receipt
//   client.on("read", ({ user, seq }) => ...);    // someone else's receipt
//   const upload = await client.upload(id, file); // a File: granted, then POSTed to storage
//   client.send(id, "a photo", { attachments: [upload] });

const OPEN = 1; // WebSocket.OPEN, without depending on a global WebSocket

const DEFAULTS = {
  historyLimit: 50, // messages loaded when a room is first joined
  fillPageLimit: 100, // page size when repairing a gap
  maxFillPages: 20, // pages to walk back through when repairing one gap
  maxFillTries: 6, // history lags the live stream (the worker stores asynchronously): retries
  settleDelays: [1500, 5000], // re-read history after a rejoin the server could not replay
  // The server limits sends and typing to the tenant's rate (default 5/s, burst 10) and
  // every other frame (join, leave, history, ping) separately (default 20/s, burst 50).
  framesPerSecond: 4,
  burst: 8,
  controlFramesPerSecond: 16,
  controlBurst: 40,
  typingInterval: 2000, // the server coalesces typing to one per 2 s anyway
  requestTimeout: 10000, // a join or history without an answer is asked again
  ackTimeout: 15000, // a send without an ack on a live socket is resent (same client_id)
  heartbeat: 25000, // silent this long: ping; no answer within requestTimeout: reconnect
  readInterval: 1000, // markRead sends at most one `read` per room per interval (the latest)
  reconnect: { base: 250, cap: 10000, afterRestart: 1000, afterFlood: 5000 },
};

// Error codes after which a send (or a change: edit, delete, react, moderate) is retried
// with the same client_id (never duplicated: the server maps a resend to the first).
const RETRY_SEND = new Set([
  "not_stored",
  "unavailable",
  "overloaded",
  "rate_limited",
  "internal",
  "busy", // a change: the message was changing under it
]);
// Error codes about a room frame (join/history) worth asking again after a backoff.
const RETRY_ROOM = new Set(["unavailable", "overloaded", "internal", "history_unavailable"]);
// The room cannot be joined: stop trying.
const ROOM_REFUSED = new Set(["room_closed", "not_found", "too_many_rooms", "removed"]);
// Frames paced by the message bucket (like the server); every other frame is a control frame.
const MESSAGE_TYPES = new Set(["send", "typing", "edit", "delete", "react", "moderate", "upload"]);
// Sequenced frames that are not messages: each has its own `id` and takes a `seq` of the
// room's sequence, like a message (so resume replays them and seq counts them).
const EVENT_TYPES = new Set(["message_edited", "message_deleted", "reaction", "moderation"]);
// What changes of a message: copied from a fresher copy (history) onto the one held.
const STATE_FIELDS = [
  "body",
  "edited_at",
  "reactions",
  "attachments",
  "deleted",
  "deleted_at",
  "deleted_by",
];
// Error codes before `ready` that the server follows with close 4401.
const CLOSES_4401 = new Set(["bad_token", "not_authenticated", "bad_json", "bad_frame"]);
// Rooms one join frame may name (the server's limit).
const MAX_JOIN_ROOMS = 20;

const randomId = () =>
  globalThis.crypto?.randomUUID?.() ??
  // randomUUID needs a secure context; getRandomValues does not.
  Array.from(globalThis.crypto.getRandomValues(new Uint8Array(16)), (b) =>
    b.toString(16).padStart(2, "0"),
  ).join("");

const hasSeq = (m) => Number.isInteger(m.seq);
const isEvent = (item) => EVENT_TYPES.has(item.type);

// The rejection of edit(), deleteMessage(), react(), moderate() and upload(): the
// server's error (or `upload_failed` when storage refused the file).
export class ChatError extends Error {
  constructor({ code, message, ref = null }) {
    super(message ?? code);
    this.name = "ChatError";
    this.code = code;
    this.ref = ref;
  }
}

// Within one epoch `seq` is the room's order; across epochs (or without seq) the
// time-ordered ULID id is.
function compareMessages(a, b) {
  if (hasSeq(a) && hasSeq(b) && a.epoch === b.epoch) return a.seq - b.seq;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

function withoutType(frame) {
  const { type, ...rest } = frame;
  return rest;
}

export class ChatClient {
  #listeners = new Map();
  #rooms = new Map(); // connection_id -> room state (#room)
  #outbox = []; // unacked sends and changes (edit, delete, react, moderate), oldest first
  // Frames waiting for their token bucket: sends and typing, and control frames.
  #buckets = { message: null, control: null };
  #socket = null;
  #stopped = true;
  #attempt = 0; // reconnect attempts since the last `ready`
  #timers = { reconnect: null, heartbeat: null };
  #lastHeard = 0;
  #pingSent = 0;
  #authError = null; // the server's error frame before `ready`: why the close that follows

  constructor({
    url,
    token,
    getToken,
    rooms = [],
    WebSocket: socketClass,
    fetch: fetchFunction,
    ...options
  } = {}) {
    if (!url) throw new TypeError("ChatClient needs a url");
    if (token == null && !getToken) throw new TypeError("ChatClient needs a token or getToken");
    this.url = url;
    this.token = token ?? null;
    this.getToken = getToken ?? null;
    this.options = {
      ...DEFAULTS,
      ...options,
      reconnect: { ...DEFAULTS.reconnect, ...options.reconnect },
    };
    this.Socket = socketClass ?? globalThis.WebSocket;
    this.fetch = fetchFunction ?? null; // for upload(); default: globalThis.fetch
    this.#resetBuckets();
    this.state = "idle";
    this.user = null;
    for (const id of rooms) this.#room(id);
  }

  // --- public API ----------------------------------------------------------------

  on(event, listener) {
    if (!this.#listeners.has(event)) this.#listeners.set(event, new Set());
    this.#listeners.get(event).add(listener);
    return () => this.off(event, listener);
  }

  off(event, listener) {
    this.#listeners.get(event)?.delete(listener);
  }

  connect() {
    if (!this.#stopped) return this;
    this.#stopped = false;
    this.#attempt = 0;
    this.#setState("connecting");
    this.#reconnectIn(0, this.token == null);
    return this;
  }

  close() {
    this.#stopped = true;
    clearTimeout(this.#timers.reconnect);
    const socket = this.#socket;
    if (socket) {
      socket.close(1000);
      this.#closed(socket, 1000);
    } else {
      this.#setState("stopped", { code: 1000 });
    }
    for (const room of this.#rooms.values()) this.#failRequests(room, "client closed");
  }

  join(connectionId) {
    const room = this.#room(connectionId);
    if (this.state === "connected" && !room.joined) this.#sendJoins([room]);
    return this;
  }

  // Leaving discards the room's messages and its unsent sends.
  leave(connectionId) {
    const room = this.#rooms.get(connectionId);
    if (!room) return this;
    if (room.joined) this.#frame({ type: "leave", connection_id: connectionId });
    this.#forget(room, "left the room");
    return this;
  }

  // `attachments`: ids from upload() (1-10); `body` may then be "".
  send(connectionId, body, { attachments } = {}) {
    if (!this.#rooms.has(connectionId)) throw new Error(`join ${connectionId} before sending`);
    const fields = { body };
    if (attachments?.length) fields.attachments = [...attachments];
    const entry = this.#entry(connectionId, "send", fields);
    this.#outbox.push(entry);
    this.#transmit(entry);
    return { clientId: entry.clientId };
  }

  // Changes: each is a promise of its ack ({clientId, connectionId, type, id, seq, ts}; `id`
  // and `seq` are the change's event), rejected with a ChatError ({code, message}) when
  // the server refuses it. Like sends they wait in the outbox while disconnected and are
  // resent with the same client_id until acknowledged. The change shows in the room when
  // its event arrives (the `update` event), normally just before the ack.
  edit(connectionId, messageId, body) {
    return this.#change(connectionId, "edit", { message_id: messageId, body });
  }

  deleteMessage(connectionId, messageId) {
    return this.#change(connectionId, "delete", { message_id: messageId });
  }

  // Adds the user's `emoji` to the message, or takes it back if already there.
  react(connectionId, messageId, emoji) {
    return this.#change(connectionId, "react", { message_id: messageId, emoji });
  }

  // Moderators only. action: mute (needs seconds), unmute, kick, ban (seconds: timed), unban.
  moderate(connectionId, action, userId, { seconds, reason } = {}) {
    const fields = { action, user_id: userId };
    if (seconds != null) fields.seconds = seconds;
    if (reason) fields.reason = reason;
    return this.#change(connectionId, "moderate", fields);
  }

  // The user has seen the room up to `seq` (default: everything the client holds, events
  // included). Never sends a seq at or below one already sent for the room, and at most
  // one `read` per room per `readInterval`: calls in between are folded into one frame,
  // with the latest seq, at the end of the interval. Returns true if `seq` will be sent.
  markRead(connectionId, seq) {
    const room = this.#rooms.get(connectionId);
    if (!room) return false;
    seq ??= room.seq ?? null;
    if (!Number.isInteger(seq) || seq < 0) return false;
    const read = room.read;
    if (seq <= Math.max(read.sent, read.wanted)) return false;
    read.wanted = seq;
    this.#flushRead(room);
    return true;
  }

  // Others' read positions in the room, from `read` receipts: {userId: seq}. The user's
  // own other devices report too (under the user's own id).
  readers(connectionId) {
    return Object.fromEntries(this.#rooms.get(connectionId)?.read.readers ?? []);
  }

  // Uploads `file` (a File or Blob with a name) for a message: asks the server for a
  // presigned POST, then POSTs the file to storage. A promise of the upload's id, for
  // send(room, body, {attachments: [id]}); rejected with a ChatError: the server's code
  // (attachment_too_large, attachment_type_not_allowed, ...) or `upload_failed`.
  upload(connectionId, file, { name, contentType } = {}) {
    if (!this.#rooms.has(connectionId)) {
      return Promise.reject(new Error(`join ${connectionId} first`));
    }
    const fields = {
      name: name ?? file.name ?? "file",
      content_type: contentType || file.type || "application/octet-stream",
      size: file.size,
    };
    const grant = this.#change(connectionId, "upload", fields);
    const promise = grant.then((granted) => this.#post(granted, file, fields.name));
    promise.clientId = grant.clientId;
    return promise;
  }

  async #post({ id, url, fields }, file, name) {
    const form = new FormData();
    for (const [key, value] of Object.entries(fields ?? {})) form.append(key, value);
    form.append("file", file, name); // last: storage ignores fields after the file
    const post = this.fetch ?? globalThis.fetch;
    let response;
    try {
      response = await post(url, { method: "POST", body: form, credentials: "omit" });
    } catch (error) {
      // The network, or the page's CSP or the bucket's CORS refused it.
      const message = `the file could not be sent to storage: ${error?.message ?? error}`;
      throw new ChatError({ code: "upload_failed", message, ref: id });
    }
    if (!response.ok) {
      const message = `storage refused the file (HTTP ${response.status})`;
      throw new ChatError({ code: "upload_failed", message, ref: id });
    }
    return id;
  }

  typing(connectionId) {
    const room = this.#rooms.get(connectionId);
    const now = Date.now();
    // Best effort: never queued behind other frames, never more than one per interval.
    const waiting = this.#buckets.message.queue.length;
    if (!room?.joined || waiting || now - room.lastTyping < this.options.typingInterval) {
      return false;
    }
    room.lastTyping = now;
    this.#frame({ type: "typing", connection_id: connectionId });
    return true;
  }

  // Older messages: {messages (newest first), next (pass as `before`, or null)}.
  // New ones are also merged into the room and emitted as "message".
  history(connectionId, { before, limit } = {}) {
    const room = this.#rooms.get(connectionId);
    if (!room) return Promise.reject(new Error(`join ${connectionId} first`));
    const page = this.#request(room, { before, limit: limit ?? this.options.historyLimit });
    return page.then(({ messages, next }) => ({ messages, next }));
  }

  messages(connectionId) {
    return [...(this.#rooms.get(connectionId)?.list ?? [])];
  }

  // Sends and changes not yet acknowledged: {clientId, connectionId, type, body?, ...}.
  pending(connectionId) {
    return this.#outbox
      .filter((e) => e.type !== "upload") // upload() promises say how those go
      .filter((e) => connectionId == null || e.connectionId === connectionId)
      .map((entry) => this.#describe(entry));
  }

  // --- events --------------------------------------------------------------------

  #emit(event, ...args) {
    for (const listener of [...(this.#listeners.get(event) ?? [])]) {
      try {
        listener(...args);
      } catch (error) {
        // A broken listener must not break the protocol; report it as uncaught.
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }

  #setState(state, detail = {}) {
    this.state = state;
    this.#emit("status", { state, ...detail });
  }

  // --- the socket ----------------------------------------------------------------

  #reconnectIn(delay, refreshToken = false) {
    clearTimeout(this.#timers.reconnect);
    this.#timers.reconnect = setTimeout(async () => {
      if (this.#stopped) return;
      if (refreshToken) {
        try {
          this.token = await this.getToken();
        } catch (error) {
          const message = String(error?.message ?? error);
          this.#emit("error", { code: "token_unavailable", message, ref: null, willRetry: true });
          this.#reconnectIn(this.#backoff(), true);
          return;
        }
        if (this.#stopped) return;
      }
      this.#open();
    }, delay);
  }

  #open() {
    const socket = new this.Socket(this.url);
    this.#socket = socket;
    socket.onopen = () => {
      if (socket !== this.#socket) return;
      // The server's rate limits start after auth, with full buckets.
      this.#resetBuckets();
      this.#authError = null;
      this.#lastHeard = Date.now();
      socket.send(JSON.stringify({ type: "auth", token: this.token }));
    };
    socket.onmessage = (event) => this.#receive(socket, event.data);
    socket.onclose = (event) => this.#closed(socket, event.code, event.reason);
    socket.onerror = () => {}; // a close event follows
    clearInterval(this.#timers.heartbeat);
    this.#timers.heartbeat = setInterval(() => this.#checkAlive(socket), this.options.heartbeat / 5);
  }

  // A dead network can take minutes to produce a close event: ping when silent.
  #checkAlive(socket) {
    if (socket !== this.#socket || socket.readyState !== OPEN) return;
    const now = Date.now();
    if (this.#pingSent && now - this.#pingSent > this.options.requestTimeout) {
      socket.close(4000);
      this.#closed(socket, 1006); // treated as a network loss
    } else if (!this.#pingSent && now - this.#lastHeard > this.options.heartbeat) {
      this.#pingSent = now;
      this.#frame({ type: "ping" });
    }
  }

  #closed(socket, code, reason) {
    if (socket !== this.#socket) return;
    this.#socket = null;
    this.#resetBuckets();
    this.#pingSent = 0;
    // Why: the close frame's reason, else what the server's error frame said.
    const detail = { code };
    const why = reason || this.#authError?.message;
    if (why) detail.reason = why;
    // A busy server says when to come back (already jittered): not sooner.
    const notBefore = this.#authError?.retry_after_ms ?? 0;
    this.#authError = null;
    clearInterval(this.#timers.heartbeat);
    for (const room of this.#rooms.values()) {
      room.joined = false;
      // What we missed comes after this; live messages after the rejoin must not hide it.
      room.resumeFrom ??= room.list.at(-1)?.id ?? null;
      clearTimeout(room.joinTimer);
      clearTimeout(room.requestTimer);
    }
    for (const entry of this.#outbox) {
      entry.sent = false; // resent, same client_id, once the room is joined again
      clearTimeout(entry.timer);
    }
    if (this.#stopped) return this.#setState("stopped", detail);
    if (code === 4403 || (code === 4401 && !this.getToken)) {
      this.#stopped = true; // forbidden, or expired with no way to get a new token
      return this.#setState("stopped", detail);
    }
    const delay = Math.max(this.#backoff(code), notBefore);
    this.#setState("reconnecting", { ...detail, delay });
    this.#reconnectIn(delay, code === 4401);
  }

  // Exponential backoff with full jitter, so a fleet of clients does not reconnect in step.
  #backoff(code) {
    const { base, cap, afterRestart, afterFlood } = this.options.reconnect;
    const attempt = this.#attempt++;
    // 1012: this server is draining for a deploy; the service is up elsewhere.
    if (code === 1012 && attempt === 0) return Math.random() * afterRestart;
    const jitter = Math.random() * Math.min(cap, base * 2 ** attempt);
    return code === 4429 ? afterFlood + jitter : jitter;
  }

  // Frames wait in queues drained by token buckets, like the server's two limits:
  // sends and typing at the tenant's rate, every other frame at the control rate.
  // The server drops frames over either and closes 4429 on repeated excess. Nothing
  // is queued while disconnected: on `ready` every join, request and send is made
  // again from state.
  #frame(frame) {
    if (this.state !== "connected") return;
    const bucket = this.#buckets[MESSAGE_TYPES.has(frame.type) ? "message" : "control"];
    bucket.queue.push(frame);
    this.#pump(bucket);
  }

  #resetBuckets() {
    const { framesPerSecond, burst, controlFramesPerSecond, controlBurst } = this.options;
    for (const bucket of Object.values(this.#buckets)) clearTimeout(bucket?.timer);
    const now = Date.now();
    const make = (rate, size) => ({ rate, size, tokens: size, refilled: now, queue: [] });
    this.#buckets.message = make(framesPerSecond, burst);
    this.#buckets.control = make(controlFramesPerSecond, controlBurst);
  }

  #pump(bucket) {
    clearTimeout(bucket.timer);
    const socket = this.#socket;
    if (!socket || socket.readyState !== OPEN) return;
    const now = Date.now();
    const refill = ((now - bucket.refilled) * bucket.rate) / 1000;
    bucket.tokens = Math.min(bucket.size, bucket.tokens + refill);
    bucket.refilled = now;
    // A join pays for each room it names, like on the server.
    const cost = (frame) => Math.max(1, frame.connection_ids?.length ?? 1);
    while (bucket.queue.length && bucket.tokens >= cost(bucket.queue[0])) {
      bucket.tokens -= cost(bucket.queue[0]);
      socket.send(JSON.stringify(bucket.queue.shift()));
    }
    if (bucket.queue.length) {
      const wait = ((cost(bucket.queue[0]) - bucket.tokens) * 1000) / bucket.rate;
      bucket.timer = setTimeout(() => this.#pump(bucket), Math.ceil(wait));
    }
  }

  #receive(socket, data) {
    if (socket !== this.#socket) return;
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    this.#lastHeard = Date.now();
    this.#pingSent = 0;
    switch (frame?.type) {
      case "ready":
        return this.#ready(frame);
      case "joined":
        return this.#joined(frame);
      case "left":
        return this.#left(frame);
      case "message":
        return this.#message(frame);
      case "message_edited":
      case "message_deleted":
      case "reaction":
      case "moderation":
        return this.#event(frame);
      case "ack":
      case "upload": // the answer to an upload: its grant
        return this.#ack(frame);
      case "read":
        return this.#receipt(frame);
      case "history":
        return this.#historyAnswer(frame);
      case "error":
        return this.#error(frame);
      case "typing":
      case "presence":
        return this.#emit(frame.type, withoutType(frame));
      default:
        return; // pong, and types a newer server may add
    }
  }

  #ready(frame) {
    this.user = frame.user;
    this.#attempt = 0;
    this.#setState("connected");
    this.#sendJoins([...this.#rooms.values()]);
  }

  // --- rooms ---------------------------------------------------------------------

  #room(id) {
    let room = this.#rooms.get(id);
    if (!room) {
      room = {
        id,
        joined: false,
        epoch: null, // the server's epoch for the room's seq
        seq: null, // highest contiguous seq held (null: the server gives no seq)
        known: null, // highest seq the server has announced
        list: [], // messages, ordered
        byId: new Map(),
        // Per message id: the seq its state (body, deletion, reactions) is known to be as
        // new as, so an older event or a staler history copy never undoes a newer change.
        revs: new Map(),
        events: new Set(), // ids of the events applied (an event replayed again is dropped)
        held: new Map(), // seq -> {item, rev}: a message or event past a gap, until it closes
        filling: false,
        refill: false, // false, true, or "gap": fill again if the gap is still open
        fillTries: 0,
        requests: [], // history requests, one in flight at a time
        requestTimer: null,
        joinTimer: null,
        timers: new Set(),
        lastTyping: 0,
        resumeFrom: null, // newest id held when the socket closed
        // markRead: the highest seq sent, the highest asked for, when the last frame went
        // out; and the receipts of others (user id -> seq).
        read: { sent: -1, wanted: -1, at: 0, timer: null, readers: new Map() },
      };
      this.#rooms.set(id, room);
    }
    return room;
  }

  // --- read positions ------------------------------------------------------------

  // Sends the room's wanted read position, unless one went out less than readInterval ago
  // (then at the end of the interval, whatever is wanted by then) or the room is not
  // joined (then on `joined`).
  #flushRead(room) {
    const read = room.read;
    if (read.timer || read.wanted <= read.sent) return;
    if (!room.joined || this.state !== "connected") return;
    const wait = read.at + this.options.readInterval - Date.now();
    if (wait > 0) {
      read.timer = setTimeout(() => {
        read.timer = null;
        if (this.#rooms.get(room.id) === room) this.#flushRead(room);
      }, wait);
      return;
    }
    read.sent = read.wanted;
    read.at = Date.now();
    this.#frame({ type: "read", connection_id: room.id, seq: read.sent });
  }

  // A receipt: someone (or the user on another device) has seen the room up to seq.
  #receipt(frame) {
    const room = this.#rooms.get(frame.connection_id);
    if (!room || !frame.user?.id || !Number.isInteger(frame.seq)) return;
    const readers = room.read.readers;
    if ((readers.get(frame.user.id) ?? -1) >= frame.seq) return; // positions never move back
    readers.set(frame.user.id, frame.seq);
    this.#emit("read", withoutType(frame));
  }

  #later(room, fn, delay) {
    const timer = setTimeout(() => {
      room.timers.delete(timer);
      if (this.#rooms.get(room.id) === room) fn();
    }, delay);
    room.timers.add(timer);
  }

  #forget(room, reason) {
    this.#rooms.delete(room.id);
    clearTimeout(room.joinTimer);
    clearTimeout(room.read.timer);
    clearTimeout(room.requestTimer);
    for (const timer of room.timers) clearTimeout(timer);
    this.#failRequests(room, reason);
    this.#outbox = this.#outbox.filter((e) => {
      if (e.connectionId !== room.id) return true;
      clearTimeout(e.timer);
      e.reject?.(new ChatError({ code: "left", message: reason, ref: e.clientId }));
      return false;
    });
  }

  // One join frame per MAX_JOIN_ROOMS rooms; a single room uses `connection_id`.
  #sendJoins(rooms) {
    for (let start = 0; start < rooms.length; start += MAX_JOIN_ROOMS) {
      const chunk = rooms.slice(start, start + MAX_JOIN_ROOMS);
      if (chunk.length === 1) {
        this.#sendJoin(chunk[0]);
        continue;
      }
      // Resume per room: the server replays what came after each room's `since`.
      const frame = { type: "join", connection_ids: chunk.map((room) => room.id) };
      const resuming = chunk.filter((room) => room.seq != null);
      if (resuming.length) frame.since = Object.fromEntries(resuming.map((r) => [r.id, r.seq]));
      const epochs = resuming.filter((room) => room.epoch != null);
      if (epochs.length) frame.epoch = Object.fromEntries(epochs.map((r) => [r.id, r.epoch]));
      this.#frame(frame);
      for (const room of chunk) this.#awaitJoined(room);
    }
  }

  #sendJoin(room) {
    const frame = { type: "join", connection_id: room.id };
    if (room.seq != null) {
      // Resume: the server replays what came after `since`, or says it cannot.
      frame.since = room.seq;
      if (room.epoch != null) frame.epoch = room.epoch;
    }
    this.#frame(frame);
    this.#awaitJoined(room);
  }

  // Not joined within requestTimeout: ask again (for this room alone).
  #awaitJoined(room) {
    room.joined = false;
    clearTimeout(room.joinTimer);
    room.joinTimer = setTimeout(() => {
      if (this.#rooms.get(room.id) === room && !room.joined && this.state === "connected") {
        this.#sendJoin(room);
      }
    }, this.options.requestTimeout);
  }

  #joined(frame) {
    const room = this.#rooms.get(frame.connection_id);
    if (!room) return;
    clearTimeout(room.joinTimer);
    if (room.joined) return; // the answer to a repeated join
    room.joined = true;
    const recovered = frame.recovered === true; // absent (older servers): not recovered
    let newStream = false;
    if (Number.isInteger(frame.seq)) {
      if (room.seq == null || (frame.epoch ?? null) !== room.epoch) {
        // First join, or the server's sequence restarted: count from here; what was
        // missed before is found by id in history.
        newStream = room.seq != null || room.list.length > 0;
        if (room.epoch != null && (frame.epoch ?? null) !== room.epoch) {
          // Seqs of another epoch: read positions start again.
          Object.assign(room.read, { sent: -1, wanted: -1 });
          room.read.readers.clear();
        }
        room.epoch = frame.epoch ?? null;
        room.seq = frame.seq;
        room.known = frame.seq;
        room.held.clear();
        room.revs.clear(); // seqs of another epoch: history's state wins, events apply
      } else {
        room.known = Math.max(room.known ?? 0, frame.seq);
      }
    }
    this.#emit("joined", {
      connectionId: room.id,
      seq: frame.seq ?? null,
      epoch: frame.epoch ?? null,
      recovered,
      // The room's users now ([{id, name, role}]), from servers that send them.
      ...(Array.isArray(frame.members)
        ? { members: frame.members, memberCount: frame.member_count ?? frame.members.length }
        : {}),
    });
    if (room.requests.length) this.#sendHistory(room); // asked before a disconnect
    if (!recovered) this.#fill(room);
    else if (room.held.size || room.seq < room.known) this.#fill(room);
    // Without seq tracking nothing tells us about messages that reach history late.
    if (!recovered && (room.seq == null || newStream)) {
      for (const delay of this.options.settleDelays) this.#later(room, () => this.#fill(room), delay);
    }
    for (const entry of this.#outbox) if (entry.connectionId === room.id) this.#transmit(entry);
    this.#flushRead(room); // a position asked for while disconnected
  }

  #left(frame) {
    const room = this.#rooms.get(frame.connection_id);
    if (room && frame.reason === "resync") {
      // The server could not repair our stream: rejoin at once, resuming from our seq.
      room.joined = false;
      this.#sendJoin(room);
      return;
    }
    if (room) this.#forget(room, frame.reason === "closed" ? "room closed" : "left the room");
    this.#emit("left", { connectionId: frame.connection_id, reason: frame.reason ?? null });
  }

  // --- messages ------------------------------------------------------------------

  #message(frame) {
    const room = this.#rooms.get(frame.connection_id);
    if (room) this.#accept(room, withoutType(frame), true);
  }

  // message_edited, message_deleted, reaction, moderation: kept with their `type`.
  #event(frame) {
    const room = this.#rooms.get(frame.connection_id);
    if (room) this.#accept(room, { ...frame }, true);
  }

  #has(room, item) {
    return isEvent(item) ? room.events.has(item.id) : room.byId.has(item.id);
  }

  // Every message and event, live, replayed, from history or from an ack, passes here
  // once per id. Events take seqs like messages: seq counts both. `rev`: the seq a
  // message's state is as new as (its own seq, or more for a history copy).
  #accept(room, item, live, rev = item.seq) {
    if (this.#has(room, item)) return;
    if (room.seq == null || !hasSeq(item) || item.seq <= room.seq) {
      this.#take(room, item, rev); // untracked, or older than the contiguous point
      return;
    }
    if (item.seq > room.seq + 1) {
      // A gap: hold this one back and ask history for what is missing. A held copy
      // with fresher state (from history) is not replaced by a staler one.
      const had = room.held.get(item.seq);
      if (!(had?.item.id === item.id && had.rev > rev)) room.held.set(item.seq, { item, rev });
      room.known = Math.max(room.known ?? 0, item.seq);
      if (live) this.#fill(room, true);
      return;
    }
    this.#take(room, item, rev);
    room.seq = item.seq;
    this.#release(room);
  }

  // Shows what was held right after the contiguous point, in seq order.
  #release(room) {
    while (room.held.has(room.seq + 1)) {
      const next = room.held.get(room.seq + 1);
      room.held.delete(room.seq + 1);
      room.seq += 1;
      if (!this.#has(room, next.item)) this.#take(room, next.item, next.rev);
    }
    room.known = Math.max(room.known ?? 0, room.seq);
  }

  #take(room, item, rev) {
    if (isEvent(item)) this.#apply(room, item);
    else this.#store(room, item, rev);
  }

  #store(room, message, rev = message.seq) {
    if (hasSeq(message) && message.epoch === undefined) message.epoch = room.epoch;
    let index = room.list.length;
    while (index > 0 && compareMessages(message, room.list[index - 1]) < 0) index -= 1;
    room.list.splice(index, 0, message);
    room.byId.set(message.id, message);
    if (Number.isInteger(rev)) room.revs.set(message.id, rev);
    this.#emit("message", message, index);
  }

  // An event in seq order: change the message it is about (if held and the event is
  // newer than what the message shows), then tell the application: the event by its
  // type, (event, message or null, index or -1), and `update` (message, index).
  #apply(room, event) {
    room.events.add(event.id);
    const detail = withoutType(event);
    let message = null;
    let changed = false;
    if (event.type !== "moderation") {
      message = room.byId.get(event.message_id) ?? null;
      const rev = room.revs.get(event.message_id);
      const stale = message && hasSeq(event) && room.seq != null && rev >= event.seq;
      if (message && !stale) {
        changed = applyEvent(message, event);
        if (hasSeq(event)) room.revs.set(message.id, event.seq);
      }
    }
    const index = message ? room.list.indexOf(message) : -1;
    this.#emit(event.type, detail, message, index);
    if (changed) this.#emit("update", message, index);
  }

  // A history copy of a message already held: its state is as new as `rev` (the seq
  // the server had reached when the history was asked for), so it wins unless the
  // client applied a newer event meanwhile.
  #refresh(room, message, fresh, rev) {
    const held = room.revs.get(message.id);
    if (room.seq != null && held != null && (rev == null || held > rev)) return;
    if (rev != null) room.revs.set(message.id, rev);
    let changed = false;
    for (const field of STATE_FIELDS) {
      const now = fresh[field];
      if (JSON.stringify(message[field]) === JSON.stringify(now)) continue;
      if (now === undefined) delete message[field];
      else message[field] = now;
      changed = true;
    }
    if (changed) this.#emit("update", message, room.list.indexOf(message));
  }

  // After a history walk that reached what the client held: every seq up to `ceiling`
  // (what the server had when the walk began) that history did not bring as a message
  // was an event, and history's copies already show its effect. Count them.
  #settle(room, ceiling) {
    if (room.seq == null || !Number.isInteger(ceiling)) return;
    while (room.seq < ceiling) {
      const next = room.held.get(room.seq + 1);
      room.held.delete(room.seq + 1);
      room.seq += 1;
      if (next && !this.#has(room, next.item)) this.#take(room, next.item, next.rev);
    }
    this.#release(room);
  }

  #gapOpen(room) {
    return room.seq != null && (room.held.size > 0 || room.seq < (room.known ?? 0));
  }

  // Walks history back from the newest message until it reaches what we held before.
  async #fill(room, forGap = false) {
    if (room.filling) {
      room.refill = room.refill === true || !forGap ? true : "gap";
      return;
    }
    room.filling = true;
    try {
      do {
        room.refill = false;
        const anchor = room.resumeFrom ?? room.list.at(-1)?.id ?? null;
        let before;
        let ceiling;
        for (let pages = 1; ; pages += 1) {
          const limit = anchor ? this.options.fillPageLimit : this.options.historyLimit;
          const page = await this.#request(room, { before, limit });
          if (pages === 1) ceiling = page.bound;
          const reached = !anchor || page.messages.some((m) => m.id <= anchor);
          if (reached || !page.next) {
            this.#settle(room, ceiling); // history holds every message since: the rest were events
            break;
          }
          if (pages >= this.options.maxFillPages) break;
          before = page.next;
        }
        // Asked again meanwhile (for a live item past the gap: unless this pass closed it).
      } while (room.refill === true || (room.refill === "gap" && this.#gapOpen(room)));
      if (room.joined) room.resumeFrom = null;
    } catch {
      return; // the room was left or the client closed
    } finally {
      room.filling = false;
    }
    if (!this.#gapOpen(room)) {
      room.fillTries = 0;
    } else if (++room.fillTries <= this.options.maxFillTries) {
      // Not in history yet: the worker stores messages a moment after they are sent.
      this.#later(room, () => this.#fill(room), 250 * 2 ** room.fillTries);
    } else {
      this.#giveUp(room);
    }
  }

  // The missing messages never showed up: show what we hold and count on from there.
  #giveUp(room) {
    const from = room.seq + 1;
    const held = [...room.held.values()].sort((a, b) => a.item.seq - b.item.seq);
    room.held.clear();
    room.seq = Math.max(room.known ?? 0, ...held.map((h) => h.item.seq));
    room.fillTries = 0;
    for (const { item, rev } of held) if (!this.#has(room, item)) this.#take(room, item, rev);
    this.#emit("gap", { connectionId: room.id, from, to: room.seq });
  }

  // --- history requests ------------------------------------------------------------

  #request(room, params) {
    return new Promise((resolve, reject) => {
      room.requests.push({ params, resolve, reject });
      if (room.requests.length === 1) this.#sendHistory(room);
    });
  }

  #sendHistory(room, delay = 0) {
    clearTimeout(room.requestTimer);
    if (delay) {
      room.requestTimer = setTimeout(() => this.#sendHistory(room), delay);
      return;
    }
    const request = room.requests[0];
    if (!request || !room.joined) return; // sent once the room is joined
    // The server's state is at least this new when it answers (the first time asked).
    request.bound ??= room.known ?? room.seq;
    const frame = { type: "history", connection_id: room.id, limit: request.params.limit };
    if (request.params.before) frame.before = request.params.before;
    this.#frame(frame);
    room.requestTimer = setTimeout(() => this.#sendHistory(room), this.options.requestTimeout);
  }

  #historyAnswer(frame) {
    const room = this.#rooms.get(frame.connection_id);
    if (!room) return;
    const messages = (frame.messages ?? []).map((m) => ({ connection_id: room.id, ...m }));
    clearTimeout(room.requestTimer);
    const request = room.requests.shift();
    const bound = request?.bound ?? null; // an unasked answer: as new as each message only
    // Oldest first, so that a gap closes in order. Copies of messages already held bring
    // their state now (edited, deleted, reactions).
    for (const message of [...messages].sort(compareMessages)) {
      const rev = hasSeq(message) ? Math.max(bound ?? message.seq, message.seq) : null;
      const held = room.byId.get(message.id);
      if (held) this.#refresh(room, held, message, bound == null ? null : rev);
      else this.#accept(room, message, false, rev);
    }
    request?.resolve({ messages, next: frame.next ?? null, bound });
    this.#sendHistory(room);
  }

  #failRequests(room, reason) {
    clearTimeout(room.requestTimer);
    for (const request of room.requests.splice(0)) request.reject(new Error(reason));
  }

  // --- sends and changes ---------------------------------------------------------------

  // An outbox entry: `type` is the frame's (send, edit, delete, react, moderate), `fields`
  // the frame's own fields; changes also have their promise's resolve and reject.
  #entry(connectionId, type, fields, settle = {}) {
    const clientId = randomId();
    return { clientId, connectionId, type, fields, sent: false, tries: 0, timer: null, ...settle };
  }

  #change(connectionId, type, fields) {
    if (!this.#rooms.has(connectionId)) {
      return Promise.reject(new Error(`join ${connectionId} first`));
    }
    let entry;
    const promise = new Promise((resolve, reject) => {
      entry = this.#entry(connectionId, type, fields, { resolve, reject });
    });
    this.#outbox.push(entry);
    this.#transmit(entry);
    promise.clientId = entry.clientId;
    return promise;
  }

  // What pending() and error events say about an entry.
  #describe({ clientId, connectionId, type, fields }) {
    const detail = { clientId, connectionId, type };
    for (const [name, value] of Object.entries(fields)) {
      detail[name.replace(/_(.)/g, (_, c) => c.toUpperCase())] = value; // message_id: messageId
    }
    return detail;
  }

  #transmit(entry) {
    const room = this.#rooms.get(entry.connectionId);
    if (entry.sent || !room?.joined) return; // sent when the room is (re)joined
    entry.sent = true;
    this.#frame({
      type: entry.type,
      connection_id: entry.connectionId,
      client_id: entry.clientId,
      ...entry.fields,
    });
    clearTimeout(entry.timer);
    entry.timer = setTimeout(() => {
      entry.sent = false;
      this.#transmit(entry);
    }, this.options.ackTimeout);
  }

  #ack(frame) {
    const index = this.#outbox.findIndex((e) => e.clientId === frame.client_id);
    if (index < 0) return; // the ack of a resend we already had an ack for
    const [entry] = this.#outbox.splice(index, 1);
    clearTimeout(entry.timer);
    if (entry.type === "upload") {
      // The grant: {id, url, fields, expires_at, max_bytes}; upload() POSTs the file.
      const { type, client_id: clientId, connection_id: connectionId, ...grant } = frame;
      entry.resolve(grant);
      return;
    }
    const room = this.#rooms.get(entry.connectionId);
    // A message with attachments is not rebuilt from its ack: their links come with the
    // message itself (its echo, a replay or history).
    if (entry.type === "send" && room && this.user && !entry.fields.attachments) {
      // The echo normally came first; if a reconnect lost it, the ack says all we need.
      const { id, name } = this.user;
      const message = { connection_id: room.id, id: frame.id, sender: { id, name } };
      if (Number.isInteger(frame.seq)) message.seq = frame.seq;
      this.#accept(room, { ...message, body: entry.fields.body, ts: frame.ts }, true);
    }
    // A change's event cannot be rebuilt from its ack (reactions, moderation): it comes
    // through the room (or its replay, or history's state after a lost connection).
    const ack = {
      clientId: entry.clientId,
      connectionId: entry.connectionId,
      type: entry.type,
      id: frame.id,
      seq: frame.seq ?? null,
      ts: frame.ts,
    };
    entry.resolve?.(ack);
    this.#emit("ack", ack);
  }

  #error(frame) {
    const { code, ref } = frame;
    if (this.state !== "connected") {
      // Before `ready`: why the server refuses this socket (a close follows). The
      // message names the failed check (bad signature, expired 5 min ago, ...).
      this.#authError = frame;
      // 4403 follows `forbidden`: never again; 4401 follows a token or first-frame
      // problem: again with a fresh token, if getToken can give one; others: backoff.
      const willRetry = code !== "forbidden" && (!CLOSES_4401.has(code) || !!this.getToken);
      this.#emit("error", { ...withoutType(frame), willRetry });
      return;
    }
    const entry = this.#outbox.find((e) => e.clientId === ref);
    let willRetry = false;
    if (entry) {
      clearTimeout(entry.timer);
      entry.sent = false;
      if (RETRY_SEND.has(code)) {
        willRetry = true;
        entry.tries += 1;
        const backoff = Math.random() * Math.min(10000, 250 * 2 ** entry.tries);
        // An overloaded server says when to come back (already jittered): not sooner.
        const delay = Math.max(backoff, frame.retry_after_ms ?? 0);
        entry.timer = setTimeout(() => this.#transmit(entry), 100 + delay);
      } else if (code === "not_joined") {
        willRetry = true; // resent when the room is joined again
        const room = this.#rooms.get(entry.connectionId);
        if (room?.joined) this.#sendJoin(room);
      } else {
        this.#outbox.splice(this.#outbox.indexOf(entry), 1);
        entry.reject?.(new ChatError(frame));
      }
      if (entry.type === "send") {
        const { clientId, connectionId, fields } = entry;
        const send = { clientId, connectionId, body: fields.body };
        if (fields.attachments) send.attachments = fields.attachments;
        this.#emit("error", { ...withoutType(frame), willRetry, send });
      } else if (entry.type === "upload") {
        this.#emit("error", { ...withoutType(frame), willRetry, upload: this.#describe(entry) });
      } else {
        this.#emit("error", { ...withoutType(frame), willRetry, change: this.#describe(entry) });
      }
      return;
    }
    const room = this.#rooms.get(frame.connection_id ?? ref);
    if (room && ROOM_REFUSED.has(code)) {
      this.#forget(room, code);
    } else if (room && code === "not_joined") {
      willRetry = true;
      this.#sendJoin(room);
    } else if (room && RETRY_ROOM.has(code)) {
      willRetry = true;
      const delay = Math.max(250 + Math.random() * 1000, frame.retry_after_ms ?? 0);
      if (!room.joined) this.#later(room, () => this.#sendJoin(room), delay);
      else if (room.requests.length) this.#sendHistory(room, delay);
    }
    // rate_limited about a room: the join or history is asked again on its timeout.
    this.#emit("error", { ...withoutType(frame), willRetry: willRetry || code === "rate_limited" });
  }
}

// A message after an event: true if it changed.
function applyEvent(message, event) {
  const before = JSON.stringify(message);
  if (event.type === "message_edited" && !message.deleted) {
    message.body = event.body;
    message.edited_at = event.ts;
  } else if (event.type === "message_deleted") {
    for (const field of ["body", "edited_at", "reactions", "attachments"]) delete message[field];
    Object.assign(message, { deleted: true, deleted_at: event.ts, deleted_by: event.by ?? null });
  } else if (event.type === "reaction" && !message.deleted) {
    if (event.reactions?.length) message.reactions = event.reactions;
    else delete message.reactions;
  }
  return JSON.stringify(message) !== before;
}

export { compareMessages };
