-- Shared by the room scripts (prepended to each). A room's state is a hash
-- {epoch, seq, last_id}; its replay log a list of "<ms>|<seq>|<id>|<frame>".

-- Crockford base32, the ULID alphabet, in order.
local ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

-- Lua numbers are doubles: tostring() would print a large seq as 1.8e+15.
local function int(n)
  return string.format("%d", n)
end

local function now_ms()
  local t = redis.call("TIME")
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The room's epoch and last seq, creating the state when there is none. A
-- state that is missing was never made or was lost (Redis restarted empty,
-- failed over without it, or it expired): the new epoch starts above every
-- seq the room can have had, at 1000 x the current time in ms, so a seq
-- never repeats in a room (an epoch would need over a million messages a
-- second to catch up with the next one's start).
local function ensure_state(state_key, log_key, new_epoch, floor)
  local current = redis.call("HMGET", state_key, "epoch", "seq")
  if current[1] then
    return current[1], tonumber(current[2])
  end
  local seq = floor or now_ms() * 1000
  redis.call("HSET", state_key, "epoch", new_epoch, "seq", seq, "last_id", "")
  redis.call("DEL", log_key) -- entries of an older epoch
  return new_epoch, seq
end

local function entry_fields(entry)
  local ms, seq, id, frame = string.match(entry, "^(%d+)|(%d+)|([^|]+)|(.*)$")
  return tonumber(ms), tonumber(seq), id, frame
end

-- Whether a log entry's frame is a chat message (the log also holds content
-- events: edits, deletions, reactions, moderation).
local MESSAGE_PREFIX = '{"type":"message",'
local function is_message(frame)
  return string.sub(frame, 1, #MESSAGE_PREFIX) == MESSAGE_PREFIX
end

-- Give a frame the room's next seq and an id that sorts after the room's last
-- one, append it to the replay log (trimmed to the window) and publish it.
-- ARGV layout shared by append.lua, apply.lua and react.lua:
--   1 channel, 2 candidate id, 3 new epoch, 4 frame head, 5 frame tail,
--   6 keep_messages, 7 keep_ms, 8 max_messages, 9 sent_ttl_seconds,
--   10 state_ttl_seconds, 11 log_ttl_seconds.
-- The frame is head .. "id":…,"seq":… .. tail (`tail` defaults to ARGV[5]).
-- Returns seq, frame.
local function sequence(state_key, log_key, tail)
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
  if is_message(ARGV[4]) then -- unread counts count messages, not events
    redis.call("HINCRBY", state_key, "messages", 1)
  end

  local frame = ARGV[4] .. '"id":"' .. id .. '","seq":' .. int(seq) .. (tail or ARGV[5])
  local now = now_ms()
  redis.call("RPUSH", log_key, int(now) .. "|" .. int(seq) .. "|" .. id .. "|" .. frame)
  -- The window: at least the last `keep` entries or everything from the last
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
  return seq, frame
end

-- The first frame of a client_id already claimed (a resend), or nil.
local function claimed(sent_key)
  local first = redis.call("HMGET", sent_key, "acked", "seq", "frame", "state")
  if first[3] then
    return {0, tonumber(first[1]), tonumber(first[2]), first[3], first[4] or ""}
  end
  return nil
end

-- `state`: what the worker persists of an event (queued again as it was on a
-- resend, whatever the message's record holds by then).
local function claim(sent_key, seq, frame, state)
  redis.call("HSET", sent_key, "acked", 0, "seq", seq, "frame", frame, "state", state or "")
  redis.call("EXPIRE", sent_key, tonumber(ARGV[9]))
end

-- The message's record, created from the seed (a JSON object, "" for none)
-- when missing; its version, or nil when it is missing and there is no seed.
local function ensure_record(record_key, seed, ttl)
  local version = redis.call("HGET", record_key, "ver")
  if version then return version end
  if seed == "" then return nil end
  for field, value in pairs(cjson.decode(seed)) do
    redis.call("HSET", record_key, field, value)
  end
  redis.call("HSET", record_key, "ver", "0")
  redis.call("EXPIRE", record_key, ttl) -- also when the change is refused after all
  return "0"
end
