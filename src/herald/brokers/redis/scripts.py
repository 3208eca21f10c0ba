"""The Lua scripts of the Redis Streams broker: each one is a single atomic step.

Redis runs a script without interleaving other commands, which is what makes
publish-vs-declare, reading within a prefetch window, retry and dead-lettering
race-free. Times come from the server's clock (``TIME``), so that processes on hosts
with skewed clocks agree on when a retry is due, a consumer is alive, or a dead
letter has expired.

Every key a script touches is passed in ``KEYS``. The keys of one service (its queue
streams, their delayed sets and liveness sets, its dead letters) share a hash slot
(see :mod:`.topology`), so every script but ``PUBLISH``, ``DECLARE``, ``UNDECLARE``
and a replay across services stays within one slot.

An exclusive queue has a lock: a string holding the name of the consumer taking its
deliveries, set with ``PX`` a lease. ``ACQUIRE`` takes it when free, the heartbeat
(``RENEW``) extends it only while it still names the holder, ``LET_GO`` (or ``CLOSE``)
deletes it only then and pushes to the queue's hand-off list, on which standbys block.
``READ`` and ``CLAIM`` hand out nothing to a consumer the lock does not name.
"""

from __future__ import annotations

__all__ = [
    "ACK",
    "ACQUIRE",
    "CLAIM",
    "CLOSE",
    "DEAD_LETTER",
    "DECLARE",
    "INSPECT",
    "LET_GO",
    "MOVE_DUE",
    "PUBLISH",
    "PUBLISH_LATER",
    "READ",
    "RELEASE",
    "RENEW",
    "REPLAY",
    "RETRY",
    "TRIM_DEAD_LETTERS",
    "UNDECLARE",
]

_NOW = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

_WINDOW = """
local function body_size(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'body' then return string.len(fields[i + 1]) end
  end
  return 0
end
-- herald.window.Window's rule: room while both bounds are under; always for the first.
local function has_room(held, bytes, max_held, max_bytes)
  return held == 0 or (held < max_held and bytes < max_bytes)
end
"""

_LET_GO = """
-- An exclusive queue's lock goes if it names the consumer; one standby blocking on
-- the hand-off list is woken (the list holds one entry at most, for a lease at most).
local function let_go(lock, handoff, consumer, lease)
  if redis.call('GET', lock) ~= consumer then return 0 end
  redis.call('DEL', lock, handoff)
  redis.call('RPUSH', handoff, consumer)
  redis.call('PEXPIRE', handoff, lease)
  return 1
end
"""

_TRIM = """
-- Letters older than the retention go; the stream expires a retention after its newest.
local function trim_dead_letters(key, retention)
  if retention <= 0 then
    redis.call('PERSIST', key)
    return
  end
  redis.call('XTRIM', key, 'MINID', now_ms() - retention)
  local newest = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  if #newest == 0 then
    redis.call('DEL', key)
  else
    redis.call('PEXPIREAT', key, tonumber(string.match(newest[1][1], '^(%d+)')) + retention)
  end
end
"""

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

PUBLISH_LATER = (
    _NOW
    + """
-- KEYS[1] bindings version, KEYS[2..] delayed sets of the queues
-- ARGV[1] version the caller routed with, ARGV[2] message count, then per message:
--   delay ms, member token, target count, target KEYS indexes..., field count, fields...
-- Each message waits in the delayed set of every bound queue (score: when it is due,
-- by the server's clock); the mover of a consumer of the queue adds it when due.
local version = redis.call('GET', KEYS[1]) or ''
if version ~= ARGV[1] then return -1 end
local now = now_ms()
local i, added = 3, 0
for _ = 1, tonumber(ARGV[2]) do
  local due = now + tonumber(ARGV[i]); local token = ARGV[i + 1]; i = i + 2
  local nt = tonumber(ARGV[i]); i = i + 1
  local targets = {}
  for t = 1, nt do targets[t] = KEYS[tonumber(ARGV[i])]; i = i + 1 end
  local nf = tonumber(ARGV[i]); i = i + 1
  local fields = {}
  for f = 1, nf do fields[f] = ARGV[i]; i = i + 1 end
  local member = cmsgpack.pack(token, fields)
  for t = 1, nt do
    redis.call('ZADD', targets[t], due, member)
    added = added + 1
  end
end
return added
"""
)

DECLARE = """
-- KEYS[1] bindings hash, KEYS[2] bindings version, KEYS[3] queue stream
-- ARGV[1] queue (also the group), ARGV[2] new version token, ARGV[3..] patterns
local current = redis.call('HGET', KEYS[1], ARGV[1])
local seen, list, changed = {}, {}, not current
if current then
  for p in string.gmatch(current, '%S+') do
    if not seen[p] then seen[p] = true; list[#list + 1] = p end
  end
end
for j = 3, #ARGV do
  if not seen[ARGV[j]] then seen[ARGV[j]] = true; list[#list + 1] = ARGV[j]; changed = true end
end
local created = redis.pcall('XGROUP', 'CREATE', KEYS[3], ARGV[1], '0', 'MKSTREAM')
local ok = type(created) ~= 'table' or created.err == nil
if changed or ok then
  redis.call('HSET', KEYS[1], ARGV[1], table.concat(list, ' '))
  redis.call('SET', KEYS[2], ARGV[2])
end
return ok and 1 or 0
"""

UNDECLARE = """
-- KEYS[1] bindings hash, KEYS[2] bindings version, KEYS[3..] the queue's keys (stream,
-- delayed set, liveness set, lock, hand-off list); ARGV[1] queue, ARGV[2] version token
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', unpack(KEYS, 3))
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""

READ = (
    _WINDOW
    + """
-- KEYS[1] queue stream, KEYS[2] (exclusive queues only) its lock
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] deliveries held, ARGV[4] bytes held,
-- ARGV[5] message bound, ARGV[6] byte bound, ARGV[7] lease ms, ARGV[8..] ids to ack
-- First the acks the consumer's settled deliveries queued (as ACK: acknowledged and
-- deleted), whatever follows. Then new entries, as many as the prefetch window has
-- room for. Those read beyond its
-- byte bound are given back at once, claimable by any consumer as if never
-- delivered (idle = a lease, count 0). Returns {entries, how many were given back,
-- state}. State, for an exclusive queue: 'lost' (the lock names another consumer or
-- nobody: nothing read), 'claim' (entries wait to be claimed, released or lost with a
-- consumer: claim them first, nothing read), else the newest entry's id ('0-0' for
-- none), after which a wait for new entries starts. '' for other queues.
if #ARGV > 7 then
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 8))
  redis.call('XDEL', KEYS[1], unpack(ARGV, 8))
end
local state = ''
if KEYS[2] then
  if redis.call('GET', KEYS[2]) ~= ARGV[2] then return {{}, 0, 'lost'} end
  if #redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[7], '-', '+', 1) > 0 then
    return {{}, 0, 'claim'}
  end
  local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  state = newest[1] and newest[1][1] or '0-0'
end
local held, bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
local max_held, max_bytes = tonumber(ARGV[5]), tonumber(ARGV[6])
local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2],
  'COUNT', math.max(1, max_held - held), 'STREAMS', KEYS[1], '>')
if not reply then return {{}, 0, state} end
local out, back = {}, 0
for _, entry in ipairs(reply[1][2]) do
  if has_room(held, bytes, max_held, max_bytes) then
    out[#out + 1] = entry
    held = held + 1
    bytes = bytes + body_size(entry[2])
  else
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, entry[1],
      'IDLE', ARGV[7], 'RETRYCOUNT', 0, 'JUSTID')
    back = back + 1
  end
end
return {out, back, state}
"""
)

CLAIM = (
    _NOW
    + _WINDOW
    + """
-- KEYS[1] queue stream, KEYS[2] its liveness set, KEYS[3] (exclusive queues only) its lock
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] idle ms (a lease; less when taking over an
-- exclusive queue), ARGV[4] XAUTOCLAIM cursor, ARGV[5..8] as READ's ARGV[3..6]
-- Entries idle for a whole lease (their consumer stopped renewing them: it died, or
-- released them) are taken over while the window has room, each with its delivery
-- count. Returns {next cursor, {{id, fields, count}...}}; cursor 0-0: sweep done;
-- cursor 'lost': the lock of the exclusive queue names another consumer or nobody.
-- A sweep starts by forgetting the consumer names that are not alive and own nothing.
if KEYS[3] and redis.call('GET', KEYS[3]) ~= ARGV[2] then return {'lost', {}} end
local cursor = ARGV[4]
if cursor == '0-0' then
  local now = now_ms()
  for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
    local name, pending
    for i = 1, #c, 2 do
      if c[i] == 'name' then name = c[i + 1] elseif c[i] == 'pending' then pending = c[i + 1] end
    end
    if pending == 0 and name ~= ARGV[2] then
      local expiry = redis.call('ZSCORE', KEYS[2], name)
      if not expiry or tonumber(expiry) <= now then
        redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
      end
    end
  end
end
local held, bytes = tonumber(ARGV[5]), tonumber(ARGV[6])
local max_held, max_bytes = tonumber(ARGV[7]), tonumber(ARGV[8])
local out, steps = {}, 0
while has_room(held, bytes, max_held, max_bytes) and steps < 100 do
  steps = steps + 1
  local reply = redis.call(
    'XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], cursor, 'COUNT', 1)
  cursor = reply[1]
  for _, entry in ipairs(reply[2]) do
    if type(entry) == 'table' and type(entry[2]) == 'table' then
      local p = redis.call('XPENDING', KEYS[1], ARGV[1], entry[1], entry[1], 1)
      out[#out + 1] = {entry[1], entry[2], p[1] and p[1][4] or 1}
      held = held + 1
      bytes = bytes + body_size(entry[2])
    end
  end
  if cursor == '0-0' then break end
end
return {cursor, out}
"""
)

RENEW = (
    _NOW
    + """
-- KEYS[1] queue stream, KEYS[2] its liveness set, KEYS[3] (an exclusive queue's holder
-- only) its lock
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] lease ms, ARGV[4] 1 while the consumer
-- is open, ARGV[5..] ids it holds
-- The heartbeat: the consumer is alive for another lease, and the entries it holds
-- (still its own) get their idle time reset, so that nobody claims them. The lock is
-- extended for a lease while it names the consumer. Returns {entries renewed or -1
-- (no stream), lock: 1 held, 0 lost}.
local now = now_ms()
if ARGV[4] == '1' then redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[2]) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local locked = 1
if KEYS[3] then
  if redis.call('GET', KEYS[3]) == ARGV[2] then
    redis.call('PEXPIRE', KEYS[3], ARGV[3])
  else
    locked = 0
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, locked} end
local claim, renewed = {KEYS[1], ARGV[1], ARGV[2], 0}, 0
for j = 5, #ARGV do
  if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[j], ARGV[j], 1, ARGV[2]) > 0 then
    claim[#claim + 1] = ARGV[j]
    renewed = renewed + 1
  end
  if #claim == 1004 or (j == #ARGV and #claim > 4) then
    claim[#claim + 1] = 'JUSTID'
    redis.call('XCLAIM', unpack(claim))
    claim = {KEYS[1], ARGV[1], ARGV[2], 0}
  end
end
return {renewed, locked}
"""
)

ACQUIRE = """
-- KEYS[1] an exclusive queue's lock; ARGV[1] consumer, ARGV[2] lease ms
-- Takes the lock for a lease if nobody holds it. Returns 0 when the consumer holds
-- it now, else the ms until it lapses unless renewed (a lease if it never does).
local owner = redis.call('GET', KEYS[1])
if not owner or owner == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 0
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then ttl = tonumber(ARGV[2]) end
return ttl
"""

LET_GO = (
    _LET_GO
    + """
-- KEYS[1] an exclusive queue's lock, KEYS[2] its hand-off list
-- ARGV[1] consumer, ARGV[2] lease ms. Returns 1 if the consumer held the lock.
return let_go(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
"""
)

RELEASE = """
-- KEYS[1] queue stream; ARGV[1] group, ARGV[2] consumer, ARGV[3] lease ms, ARGV[4..] ids
-- Makes entries this consumer owns claimable at once (idle = a lease), each with its
-- delivery count one lower so that the claim redelivering it counts no attempt.
local released = 0
for j = 4, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[j], ARGV[j], 1, ARGV[2])
  if #p > 0 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[j],
      'IDLE', ARGV[3], 'RETRYCOUNT', math.max(0, p[1][4] - 1), 'JUSTID')
    released = released + 1
  end
end
return released
"""

CLOSE = (
    _LET_GO
    + """
-- KEYS[1] queue stream, KEYS[2] its liveness set, KEYS[3], KEYS[4] (an exclusive
-- queue's lock and hand-off list, when the consumer lets go of it now)
-- ARGV[1] group, ARGV[2] consumer, ARGV[3] lease ms, ARGV[4] 'all' or 'unheld',
-- ARGV[5..] ids still held
-- A consumer stops: it is no longer alive. What it owns but never handed out (a read
-- cut short) is released; with 'all' (its broker closes) what it held becomes
-- claimable at once too, keeping its count (lost with its consumer: an attempt). The
-- name leaves the group when it owns nothing (else a later sweep removes it). An
-- exclusive queue's lock, when passed, is let go (see let_go).
redis.call('ZREM', KEYS[2], ARGV[2])
if KEYS[3] then let_go(KEYS[3], KEYS[4], ARGV[2], ARGV[3]) end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local held = {}
for j = 5, #ARGV do held[ARGV[j]] = true end
local start, owned = '-', 0
while true do
  local batch = redis.call('XPENDING', KEYS[1], ARGV[1], start, '+', 1000, ARGV[2])
  for _, p in ipairs(batch) do
    owned = owned + 1
    if not held[p[1]] then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, p[1],
        'IDLE', ARGV[3], 'RETRYCOUNT', math.max(0, p[4] - 1), 'JUSTID')
    elseif ARGV[4] == 'all' then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, p[1], 'IDLE', ARGV[3], 'JUSTID')
    end
  end
  if #batch < 1000 then break end
  start = '(' .. batch[#batch][1]
end
if owned == 0 then redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) end
return owned
"""
)

ACK = """
-- KEYS[1] queue stream; ARGV[1] group, ARGV[2..] ids
-- Acknowledge and delete: a queue stream holds only unsettled entries.
redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
return redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
"""

RETRY = (
    _NOW
    + """
-- KEYS[1] queue stream, KEYS[2] its delayed set
-- ARGV[1] group, ARGV[2] entry id, ARGV[3] delay ms, ARGV[4] attempt field,
-- ARGV[5] attempts made, ARGV[6..] header name/value pairs to merge
-- The entry, headers merged and attempts recorded, waits in the delayed set (score:
-- when it is due); the original is acknowledged and deleted.
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
redis.call('ZADD', KEYS[2], now_ms() + tonumber(ARGV[3]), cmsgpack.pack(ARGV[2], out))
return 1
"""
)

MOVE_DUE = (
    _NOW
    + """
-- KEYS[1] a queue's delayed set, KEYS[2] the queue stream; ARGV[1] batch size
-- Due retries go to the end of their queue. Returns {moved, dropped (the queue is
-- gone), ms until the next one is due or -1}.
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local moved, dropped = 0, 0
local exists = #due > 0 and redis.call('EXISTS', KEYS[2]) == 1
for _, member in ipairs(due) do
  if exists then
    local _, fields = cmsgpack.unpack(member)
    redis.call('XADD', KEYS[2], '*', unpack(fields))
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
)

DEAD_LETTER = (
    _NOW
    + _TRIM
    + """
-- KEYS[1] queue stream, KEYS[2] the service's dead-letter stream
-- ARGV[1] group, ARGV[2] entry id, ARGV[3] attempt field, ARGV[4] retention ms
-- (0: for ever), ARGV[5] id field, ARGV[6] message id, ARGV[7..] reason header pairs
-- The entry's own fields (as they were, even undecodable) plus the reason go to the
-- dead letters, with the message id the runtime saw when the entry carried none;
-- letters older than the retention are trimmed; the original is acked and deleted.
local entry = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #entry == 0 then return 0 end
local fields, skip, out, has_id = entry[1][2], {}, {}, false
skip[ARGV[3]] = true
for j = 7, #ARGV, 2 do skip[ARGV[j]] = true end
for j = 1, #fields, 2 do
  if not skip[fields[j]] then out[#out + 1] = fields[j]; out[#out + 1] = fields[j + 1] end
  if fields[j] == ARGV[5] then has_id = true end
end
if not has_id then out[#out + 1] = ARGV[5]; out[#out + 1] = ARGV[6] end
for j = 7, #ARGV do out[#out + 1] = ARGV[j] end
redis.call('XADD', KEYS[2], '*', unpack(out))
trim_dead_letters(KEYS[2], tonumber(ARGV[4]))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""
)

TRIM_DEAD_LETTERS = (
    _NOW
    + _TRIM
    + """
-- KEYS[1] a dead-letter stream; ARGV[1] retention ms (0: for ever)
trim_dead_letters(KEYS[1], tonumber(ARGV[1]))
return redis.call('XLEN', KEYS[1])
"""
)

REPLAY = """
-- KEYS[1] dead-letter stream, KEYS[2..] target queue streams
-- ARGV[1] count, then per letter: dead-letter entry id, target KEYS index, field
-- count, fields... A letter still there goes back to a queue that still exists.
local i, moved = 2, 0
for _ = 1, tonumber(ARGV[1]) do
  local id, target, nf = ARGV[i], KEYS[tonumber(ARGV[i + 1])], tonumber(ARGV[i + 2])
  local fields = {}
  for f = 1, nf do fields[f] = ARGV[i + 2 + f] end
  i = i + 3 + nf
  if #redis.call('XRANGE', KEYS[1], id, id) > 0 and redis.call('EXISTS', target) == 1 then
    redis.call('XADD', target, '*', unpack(fields))
    redis.call('XDEL', KEYS[1], id)
    moved = moved + 1
  end
end
return moved
"""

INSPECT = (
    _NOW
    + """
-- KEYS[1] queue stream, KEYS[2] its delayed set, KEYS[3] its liveness set
-- ARGV[1] group, ARGV[2] lease ms
-- Returns {} when the queue is gone, else {depth, in flight, consumers, oldest wait
-- ms}. The stream holds only unsettled entries: those after the group's last
-- delivered id wait (XLEN - pending); pending ones idle for a lease or more were
-- released or lost with their consumer and wait to be claimed; the others are in
-- flight. Retries waiting out their delay count in the depth.
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local last
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, id
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then id = g[i + 1] end
  end
  if name == ARGV[1] then last = id end
end
if not last then return {} end
local now, lease = now_ms(), tonumber(ARGV[2])
local pending = redis.call('XPENDING', KEYS[1], ARGV[1])[1]
local claimable, oldest = 0, 0
local start = '-'
while true do
  local batch = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', lease, start, '+', 1000)
  for _, p in ipairs(batch) do
    claimable = claimable + 1
    oldest = math.max(oldest, p[3] - lease)
  end
  if #batch < 1000 then break end
  start = '(' .. batch[#batch][1]
end
local first = redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', 1)
if #first > 0 then
  oldest = math.max(oldest, now - tonumber(string.match(first[1][1], '^(%d+)')))
end
local waiting = math.max(0, redis.call('XLEN', KEYS[1]) - pending)
local depth = waiting + claimable + redis.call('ZCARD', KEYS[2])
local alive = redis.call('ZCOUNT', KEYS[3], '(' .. now, '+inf')
return {depth, pending - claimable, alive, oldest}
"""
)
