-- Up to `limit` chat messages of the log older than message id `before` (all
-- newest, if before is empty), oldest first; event entries are skipped. Ids
-- in the log ascend with seq.
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
local found = {}
local chunk = math.max(limit, 50)
while stop > 0 and #found < limit do
  local start = math.max(0, stop - chunk)
  local entries = redis.call("LRANGE", log_key, start, stop - 1)
  for i = #entries, 1, -1 do
    local _, _, _, frame = entry_fields(entries[i])
    if is_message(frame) then
      found[#found + 1] = entries[i]
      if #found == limit then break end
    end
  end
  stop = start
end
local result = {}
for i = #found, 1, -1 do result[#result + 1] = found[i] end
return result
