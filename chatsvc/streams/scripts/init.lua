-- KEYS: state, log. ARGV: epoch, state_ttl_seconds.
-- A new room starts at seq 0 in a fresh epoch (its first message is seq 1).
local epoch, seq = ensure_state(KEYS[1], KEYS[2], ARGV[1], 0)
redis.call("EXPIRE", KEYS[1], tonumber(ARGV[2]))
return {epoch, seq}
