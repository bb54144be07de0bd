-- Posts one message atomically: claims the sender's client_id, assigns the
-- room's next seq and a message id that sorts after the room's last one,
-- appends the frame to the replay log (trimmed to the window), publishes it
-- and remembers the client_id. A client_id already claimed returns the first
-- message instead and changes nothing (a resend, or a retried call).
--
-- KEYS: sent (the client_id's record), state, log.
-- ARGV: channel, candidate id, new epoch, frame head, frame tail,
--       keep_messages, keep_ms, max_messages, sent_ttl_seconds, state_ttl_seconds,
--       log_ttl_seconds.
-- Returns {1 if new else 0, acked (0/1), seq, frame}.
local sent_key, state_key, log_key = KEYS[1], KEYS[2], KEYS[3]
local first = redis.call("HMGET", sent_key, "acked", "seq", "frame")
if first[3] then
  return {0, tonumber(first[1]), tonumber(first[2]), first[3]}
end

local channel, id = ARGV[1], ARGV[2]
local keep, keep_ms, max_messages = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])

ensure_state(state_key, log_key, ARGV[3])
local seq = redis.call("HINCRBY", state_key, "seq", 1)

-- Ids are ULIDs assigned at ingress; two web processes can reach this point in
-- the other order. Bumping a smaller id past the room's last keeps id order
-- equal to seq order, so history pages (by id) and the stream (by seq) agree.
local last_id = redis.call("HGET", state_key, "last_id")
if last_id and last_id ~= "" and id <= last_id then
  local chars = {}
  for i = 1, #last_id do chars[i] = string.sub(last_id, i, i) end
  for i = #chars, 1, -1 do
    local pos = string.find(ALPHABET, chars[i], 1, true)
    if pos < #ALPHABET then
      chars[i] = string.sub(ALPHABET, pos + 1, pos + 1)
      break
    end
    chars[i] = "0"
  end
  id = table.concat(chars)
end
redis.call("HSET", state_key, "last_id", id)

local frame = ARGV[4] .. '"id":"' .. id .. '","seq":' .. int(seq) .. ARGV[5]
local now = now_ms()
redis.call("RPUSH", log_key, int(now) .. "|" .. int(seq) .. "|" .. id .. "|" .. frame)
-- The window: at least the last `keep` messages or everything from the last
-- keep_ms, whichever is more, never more than max_messages.
local length = redis.call("LLEN", log_key)
while length > keep do
  if length <= max_messages then
    local oldest = entry_fields(redis.call("LINDEX", log_key, 0))
    if now - oldest < keep_ms then break end
  end
  redis.call("LPOP", log_key)
  length = length - 1
end
redis.call("EXPIRE", log_key, tonumber(ARGV[11]))
redis.call("EXPIRE", state_key, tonumber(ARGV[10]))
redis.call("PUBLISH", channel, int(seq) .. "|" .. frame)
redis.call("HSET", sent_key, "acked", 0, "seq", seq, "frame", frame)
redis.call("EXPIRE", sent_key, tonumber(ARGV[9]))
return {1, 0, seq, frame}
