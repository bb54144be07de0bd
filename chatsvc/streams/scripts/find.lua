-- The log entry of one message, by id ({} when the log no longer holds it).
-- KEYS: log. ARGV: message id.
local log_key, wanted = KEYS[1], ARGV[1]
local low, high = 0, redis.call("LLEN", log_key)
while low < high do
  local middle = math.floor((low + high) / 2)
  local _, _, id = entry_fields(redis.call("LINDEX", log_key, middle))
  if id < wanted then low = middle + 1 else high = middle end
end
local entry = redis.call("LINDEX", log_key, low)
if entry then
  local _, _, id, frame = entry_fields(entry)
  if id == wanted and is_message(frame) then return {entry} end
end
return {}
