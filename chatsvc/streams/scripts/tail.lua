-- The room's epoch and last seq, and the log entries after `since` when the
-- log still holds all of them (else no entries and complete = 0).
-- KEYS: state, log. ARGV: new epoch (used if the state is missing), since (-1: none).
-- Returns {epoch, seq, complete (0/1), entries...}.
local epoch, seq = ensure_state(KEYS[1], KEYS[2], ARGV[1])
local since = tonumber(ARGV[2])
if since < 0 or since >= seq then
  return {epoch, seq, since == seq and 1 or 0}
end
local length = redis.call("LLEN", KEYS[2])
local first_seq = seq - length + 1
if length == 0 or since < first_seq - 1 then
  return {epoch, seq, 0}
end
local result = {epoch, seq, 1}
for _, entry in ipairs(redis.call("LRANGE", KEYS[2], since - first_seq + 1, -1)) do
  result[#result + 1] = entry
end
return result
