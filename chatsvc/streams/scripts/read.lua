-- Moves a user's read position in a room forward (never back) and returns
-- it: {epoch, seq, count}, where `count` is how many of the room's messages
-- (not events) are at or before `seq`, so unread = the room's `messages`
-- minus `count`. A position of an older epoch (Redis lost the room's state)
-- is replaced by any new one.
--
-- KEYS: state, log, reads (chatsvc:{cid}:reads, user id -> "epoch|seq|count").
-- ARGV: user id, seq, new epoch, reads_ttl_seconds, state_ttl_seconds.
-- Returns {1 if moved else 0, epoch, seq, count}.
local state_key, log_key, reads_key = KEYS[1], KEYS[2], KEYS[3]
local user, seq = ARGV[1], tonumber(ARGV[2])
local epoch, last = ensure_state(state_key, log_key, ARGV[3])
redis.call("EXPIRE", state_key, tonumber(ARGV[5]))
if seq > last then seq = last end
local old = redis.call("HGET", reads_key, user)
if old then
  local old_epoch, old_seq = string.match(old, "^([^|]*)|(%d+)|")
  if old_epoch == epoch and tonumber(old_seq) >= seq then
    local _, _, old_count = string.match(old, "^([^|]*)|(%d+)|(%d+)$")
    return {0, epoch, tonumber(old_seq), tonumber(old_count)}
  end
end

-- Messages after `seq`: walk the log back from its end (bounded); whatever
-- the log no longer holds counts as read.
local count = tonumber(redis.call("HGET", state_key, "messages") or "0")
local stop = redis.call("LLEN", log_key)
local walked, done = 0, seq >= last
while not done and stop > 0 and walked < 10000 do
  local start = math.max(0, stop - 200)
  local entries = redis.call("LRANGE", log_key, start, stop - 1)
  for i = #entries, 1, -1 do
    local _, entry_seq, _, frame = entry_fields(entries[i])
    if entry_seq <= seq then done = true break end
    if is_message(frame) then count = count - 1 end
  end
  walked = walked + #entries
  stop = start
end
if count < 0 then count = 0 end
redis.call("HSET", reads_key, user, epoch .. "|" .. int(seq) .. "|" .. int(count))
redis.call("EXPIRE", reads_key, tonumber(ARGV[4]))
return {1, epoch, seq, count}
