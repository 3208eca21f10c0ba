"""The Lua scripts of the Redis Streams broker: each one is a single atomic step.

Redis runs a script without interleaving other commands, which is what makes
publish-vs-declare, retry and dead-lettering race-free: a publish checks the bindings
version it routed with, and a retry or dead-lettering copies, acknowledges and deletes
an entry in one go. Times come from the server's clock (``TIME``) so that consumers
on hosts with skewed clocks agree on when a delayed retry is due.
"""

from __future__ import annotations

__all__ = [
    "DEAD_LETTER",
    "DECLARE",
    "MOVE_DUE",
    "PUBLISH",
    "RELEASE_CONSUMER",
    "RENEW",
    "REPLAY",
    "RETRY",
    "UNDECLARE",
]

PUBLISH = """
-- KEYS[1] bindings version, KEYS[2..] queue streams
-- ARGV[1] version the caller routed with, ARGV[2] message count, then per message:
--   target count, target KEYS indexes..., field count, fields...
local version = redis.call('GET', KEYS[1]) or ''
if version ~= ARGV[1] then return -1 end
local i, added = 3, 0
for _ = 1, tonumber(ARGV[2]) do
  local nt = tonumber(ARGV[i]); i = i + 1
  local targets = {}
  for t = 1, nt do targets[t] = KEYS[tonumber(ARGV[i])]; i = i + 1 end
  local nf = tonumber(ARGV[i]); i = i + 1
  local fields = {}
  for f = 1, nf do fields[f] = ARGV[i]; i = i + 1 end
  for t = 1, nt do
    redis.call('XADD', targets[t], '*', unpack(fields))
    added = added + 1
  end
end
return added
"""

DECLARE = """
-- KEYS[1] bindings hash, KEYS[2] bindings version, KEYS[3] queue stream
-- ARGV[1] queue, ARGV[2] group, ARGV[3] new version token, ARGV[4..] patterns
local current = redis.call('HGET', KEYS[1], ARGV[1])
local seen, list, changed = {}, {}, not current
if current then
  for p in string.gmatch(current, '%S+') do
    if not seen[p] then seen[p] = true; list[#list + 1] = p end
  end
end
for j = 4, #ARGV do
  if not seen[ARGV[j]] then seen[ARGV[j]] = true; list[#list + 1] = ARGV[j]; changed = true end
end
local created = redis.pcall('XGROUP', 'CREATE', KEYS[3], ARGV[2], '0', 'MKSTREAM')
local ok = type(created) ~= 'table' or created.err == nil
if changed or ok then
  redis.call('HSET', KEYS[1], ARGV[1], table.concat(list, ' '))
  redis.call('SET', KEYS[2], ARGV[3])
end
return ok and 1 or 0
"""

UNDECLARE = """
-- KEYS[1] bindings hash, KEYS[2] bindings version, KEYS[3] queue stream
-- ARGV[1] queue, ARGV[2] new version token
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[3])
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""

RETRY = """
-- KEYS[1] queue stream, KEYS[2] delayed zset
-- ARGV[1] group, ARGV[2] entry id, ARGV[3] delay ms, ARGV[4] attempt field,
-- ARGV[5] attempts so far, ARGV[6..] header name/value pairs to merge
local entry = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #entry == 0 then return 0 end
local fields, skip, out = entry[1][2], {}, {}
skip[ARGV[4]] = true
for j = 6, #ARGV, 2 do skip[ARGV[j]] = true end
for j = 1, #fields, 2 do
  if not skip[fields[j]] then out[#out + 1] = fields[j]; out[#out + 1] = fields[j + 1] end
end
for j = 6, #ARGV, 2 do out[#out + 1] = ARGV[j]; out[#out + 1] = ARGV[j + 1] end
out[#out + 1] = ARGV[4]; out[#out + 1] = ARGV[5]
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), cmsgpack.pack(KEYS[1], ARGV[2], out))
return 1
"""

MOVE_DUE = """
-- KEYS[1] delayed zset; ARGV[1] batch size
-- returns {moved, dropped, ms until the next one is due or -1}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local moved, dropped = 0, 0
for _, member in ipairs(due) do
  local stream, _, fields = cmsgpack.unpack(member)
  if redis.call('EXISTS', stream) == 1 then
    redis.call('XADD', stream, '*', unpack(fields))
    moved = moved + 1
  else
    dropped = dropped + 1
  end
  redis.call('ZREM', KEYS[1], member)
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = -1
if #first > 0 then wait = math.max(0, tonumber(first[2]) - now) end
return {moved, dropped, wait}
"""

DEAD_LETTER = """
-- KEYS[1] queue stream, KEYS[2] dead-letter stream
-- ARGV[1] group, ARGV[2] entry id, ARGV[3] attempt field, ARGV[4..] reason header pairs
local entry = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #entry == 0 then return 0 end
local fields, skip, out = entry[1][2], {}, {}
skip[ARGV[3]] = true
for j = 4, #ARGV, 2 do skip[ARGV[j]] = true end
for j = 1, #fields, 2 do
  if not skip[fields[j]] then out[#out + 1] = fields[j]; out[#out + 1] = fields[j + 1] end
end
for j = 4, #ARGV do out[#out + 1] = ARGV[j] end
redis.call('XADD', KEYS[2], '*', unpack(out))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""

REPLAY = """
-- KEYS[1] dead-letter stream; ARGV[1] count, then per letter:
--   dead-letter entry id, target stream, field count, fields...
local i, moved = 2, 0
for _ = 1, tonumber(ARGV[1]) do
  local id, target, nf = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local fields = {}
  for f = 1, nf do fields[f] = ARGV[i + 2 + f] end
  i = i + 3 + nf
  local still = redis.call('XRANGE', KEYS[1], id, id)
  if #still > 0 and redis.call('EXISTS', target) == 1 then
    redis.call('XADD', target, '*', unpack(fields))
    redis.call('XDEL', KEYS[1], id)
    moved = moved + 1
  end
end
return moved
"""

RENEW = """
-- KEYS[1] queue stream; ARGV[1] group, ARGV[2] consumer, ARGV[3..] entry ids
-- Resets the idle time of the entries this consumer still owns.
local renewed = 0
for j = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[j], ARGV[j], 1, ARGV[2])
  if #p > 0 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[j], 'JUSTID')
    renewed = renewed + 1
  end
end
return renewed
"""

RELEASE_CONSUMER = """
-- KEYS[1] queue stream; ARGV[1] group, ARGV[2] consumer
-- Removes the consumer from the group only when it owns no pending entry.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #p > 0 then return 0 end
redis.pcall('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
