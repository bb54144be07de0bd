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
