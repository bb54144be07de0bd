-- Up to `limit` log entries older than message id `before` (all newest, if
-- before is empty), oldest first. Ids in the log ascend with seq.
-- KEYS: log. ARGV: before, limit.
local log_key, before, limit = KEYS[1], ARGV[1], tonumber(ARGV[2])
local length = redis.call("LLEN", log_key)
local stop = length -- entries [0, stop) are older than `before`
if before ~= "" then
  local low, high = 0, length
  while low < high do
    local middle = math.floor((low + high) / 2)
    local _, _, id = entry_fields(redis.call("LINDEX", log_key, middle))
    if id < before then low = middle + 1 else high = middle end
  end
  stop = low
end
if stop == 0 then return {} end
return redis.call("LRANGE", log_key, math.max(0, stop - limit), stop - 1)
