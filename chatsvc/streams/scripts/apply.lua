-- Posts an event that changes one message (an edit or a deletion) and
-- changes the message's record in the same atomic step, if the record is
-- still at the version the caller decided on (optimistic concurrency: the
-- caller read it, checked the rules and computed the change).
--
-- KEYS: sent, state, log, record (chatsvc:{cid}:m:<message id>).
-- ARGV: 1-11 as for `sequence` in room.lua, then
--   12 expected version, 13 seed (JSON object: the record to create when
--   there is none; "" to refuse), 14 changes (JSON object: field -> string
--   value; false deletes the field), 15 record_ttl_seconds, 16 fields set to
--   the event's seq (JSON list), 17 the event's state for the worker (kept
--   with the client_id for resends).
-- Returns {1, 0, seq, frame} when applied, a claimed client_id's first frame
-- {0, acked, seq, frame, state}, or {-1, 0, 0, "missing"} / {-2, 0, 0, "conflict"}.
local sent_key, state_key, log_key, record_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local first = claimed(sent_key)
if first then return first end

local version = ensure_record(record_key, ARGV[13], tonumber(ARGV[15]))
if not version then return {-1, 0, 0, "missing"} end
if version ~= ARGV[12] then return {-2, 0, 0, "conflict"} end

local seq, frame = sequence(state_key, log_key)
for field, value in pairs(cjson.decode(ARGV[14])) do
  if value == false then
    redis.call("HDEL", record_key, field)
  else
    redis.call("HSET", record_key, field, value)
  end
end
for _, field in ipairs(cjson.decode(ARGV[16])) do
  redis.call("HSET", record_key, field, int(seq))
end
redis.call("HINCRBY", record_key, "ver", 1)
redis.call("EXPIRE", record_key, tonumber(ARGV[15]))
claim(sent_key, seq, frame, ARGV[17])
return {1, 0, seq, frame}
