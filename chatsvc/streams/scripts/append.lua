-- Posts one frame (a message, or an event that changes no message record)
-- atomically: claims the sender's client_id, assigns the room's next seq and
-- an id that sorts after the room's last one, appends the frame to the
-- replay log (trimmed to the window), publishes it and remembers the
-- client_id. A client_id already claimed returns the first frame instead and
-- changes nothing (a resend, or a retried call).
--
-- KEYS: sent (the client_id's record), state, log.
-- ARGV: see `sequence` in room.lua.
-- Returns {1 if new else 0, acked (0/1), seq, frame}.
local sent_key, state_key, log_key = KEYS[1], KEYS[2], KEYS[3]
local first = claimed(sent_key)
if first then return first end
local seq, frame = sequence(state_key, log_key)
claim(sent_key, seq, frame)
return {1, 0, seq, frame}
