-- Toggles one user's reaction on a message and posts the `reaction` event,
-- atomically: concurrent reactions (a whole lecture pressing the same emoji)
-- each apply once, with no retries. The rules match
-- chatsvc.messaging.message_state.toggle (the in-process stream's).
--
-- KEYS: sent, state, log, record (chatsvc:{cid}:m:<message id>).
-- ARGV: 1-11 as for `sequence` in room.lua (ARGV[5] is the tail without its
--   closing brace), then 12 seed (JSON object, "" for none), 13 emoji,
--   14 user id, 15 most emoji kinds, 16 most reactions, 17 reactors shown
--   per emoji, 18 record_ttl_seconds, 19 the message's expires_at for the
--   worker (JSON: a number or null).
-- Returns {1, 0, seq, frame, reactions JSON}, a claimed client_id's first
-- frame {0, acked, seq, frame, state}, {-1, 0, 0, "missing"}, or {-3, 0, 0, code}
-- (message_deleted, too_many_kinds, too_many_reactions).
local sent_key, state_key, log_key, record_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local first = claimed(sent_key)
if first then return first end
if not ensure_record(record_key, ARGV[12], tonumber(ARGV[18])) then
  return {-1, 0, 0, "missing"}
end
if redis.call("HGET", record_key, "deleted") == "1" then return {-3, 0, 0, "message_deleted"} end

local emoji, user = ARGV[13], ARGV[14]
local stored = redis.call("HGET", record_key, "reactions")
local reactions = (stored and stored ~= "[]") and cjson.decode(stored) or {}
local mine, total = nil, 0
for _, reaction in ipairs(reactions) do
  total = total + #reaction.user_ids
  if reaction.emoji == emoji then mine = reaction end
end
local added = true
if mine then
  for i, id in ipairs(mine.user_ids) do
    if id == user then
      table.remove(mine.user_ids, i)
      added = false
      break
    end
  end
end
if added then
  if not mine then
    if #reactions >= tonumber(ARGV[15]) then return {-3, 0, 0, "too_many_kinds"} end
    mine = {emoji = emoji, user_ids = {}}
    reactions[#reactions + 1] = mine
  end
  if total >= tonumber(ARGV[16]) then return {-3, 0, 0, "too_many_reactions"} end
  mine.user_ids[#mine.user_ids + 1] = user
end

-- JSON by hand: cjson writes an empty array as {} and orders keys at random.
local kept, shown = {}, {}
local limit = tonumber(ARGV[17])
for _, reaction in ipairs(reactions) do
  local count = #reaction.user_ids
  if count > 0 then
    local ids = {}
    for i = 1, count do ids[i] = cjson.encode(reaction.user_ids[i]) end
    local name = cjson.encode(reaction.emoji)
    kept[#kept + 1] = '{"emoji":' .. name .. ',"user_ids":[' .. table.concat(ids, ",") .. ']}'
    local first_ids = {}
    for i = 1, math.min(count, limit) do first_ids[i] = ids[i] end
    shown[#shown + 1] = '{"emoji":' .. name .. ',"count":' .. int(count)
      .. ',"user_ids":[' .. table.concat(first_ids, ",") .. ']}'
  end
end
local all = "[" .. table.concat(kept, ",") .. "]"
local tail = ARGV[5] .. ',"added":' .. tostring(added) .. ',"reactions":['
  .. table.concat(shown, ",") .. ']}'
local seq, frame = sequence(state_key, log_key, tail)
redis.call("HSET", record_key, "reactions", all, "reactions_rev", int(seq))
redis.call("HINCRBY", record_key, "ver", 1)
redis.call("EXPIRE", record_key, tonumber(ARGV[18]))
claim(sent_key, seq, frame,
  '{"state":{"reactions":' .. all .. '},"expires_at":' .. ARGV[19] .. '}')
return {1, 0, seq, frame, all}
