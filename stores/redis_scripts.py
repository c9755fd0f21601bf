"""The online store's Lua scripts, each with why it is written the way it is.

Three scripts do the work that plain commands did too slowly (measured on this 2-core box
with callgrind and per-read CPU; docs/benchmarks.md has the figures):

- ``MERGE``: a consumer batch's features, merged idempotently, one call per chunk;
- ``READ_USER``: one user's state for the request path, in one round trip;
- ``READ_USER_IF_CHANGED``: the same, or only its digest when the caller already holds it,
  after a walk step when asked (the request path's one round trip);
- ``WRITE_SERVED``: served records for provenance, one call per chunk.

Keys are never built here: the adapter passes key templates made by ``stores.keys.Keys``
as arguments, so the layout keeps one home.
"""

from __future__ import annotations

from stores.redis_walks import WALK_FUNCTION

# One call merges a chunk of a batch. Keys are built from templates (ARGV[1..11] and
# [15..16], prefixes and suffixes taken from stores.keys so the layout has one
# home); the updates come as text blobs (ARGV[17..21], built by merge_records), one record
# a line, fields split by tabs (accepted lines hold neither tabs nor newlines).
#
# Why it is written this way (callgrind instruction counts on Redis 7.0 with the AOF on,
# docs/benchmarks.md): the cost is the commands a record needs (a read ~3.5k, a write
# ~10k of which ~6k is its AOF propagation, ZADD ~15k) and the strings Lua makes while
# parsing (~4k a record). So: one record per (user, movie) carries both the progress
# minute and the recent-history time; the recent ZSET is trimmed only when ZADD added a
# member (with a fixed limit only then can it grow past it; after recent_history is
# lowered, a history shrinks at its next new movie, not at its next touch); first/last
# activity is one HSET; each day's active-movie set gets one SADD and one expiry per
# chunk, not one per movie-day. Numbers are compared as digit strings, longer first,
# then by bytes: they are non-negative without leading zeros (Python's str of an int, or
# what this script wrote), and tonumber (strtod) costs ~1.7k instructions; equal-length
# digit strings order the same under any collation Lua's comparison may use. Expiry is
# PEXPIREAT of the script's TIME plus the retention: what EXPIRE computes and what it is
# propagated to the AOF as, without the rewrite (~2k instructions less). Chunks keep
# each call to a few ms: Redis serves reads too. "The same state" is the same members
# and values: one SADD of many members may size (and so DUMP) a set differently from
# adding them one by one, with the same contents.
MERGE = r"""
local T, call, gmatch = ARGV, redis.call, string.gmatch
local now = call('TIME')
local expire_at = string.format('%.0f', now[1] * 1000 + math.floor(now[2] / 1000) + tonumber(T[14]) * 1000)
local trim = T[13]
local function sadd(k, members)  -- unpack takes fewer than 8000 values
  for i = 1, #members, 1000 do call('SADD', k, unpack(members, i, math.min(i + 999, #members))) end
end
for u, m, v, ms in gmatch(T[17], "(%d+)\t([^\t\n]+)\t(%d*)\t(%d*)\n") do
  if v ~= '' then
    local k = T[1] .. u .. T[2]
    local cur = call('HGET', k, m)
    if not cur or #v > #cur or (#v == #cur and v > cur) then call('HSET', k, m, v) end
  end
  if ms ~= '' then
    local k = T[5] .. u .. T[6]
    if call('ZADD', k, 'GT', ms, m) > 0 then call('ZREMRANGEBYRANK', k, '0', trim) end
  end
end
for u, m, ms, s in gmatch(T[18], "(%d+)\t([^\t\n]+)\t(%d+)\t(%d+)\n") do
  local k = T[3] .. u .. T[4]
  local cur = call('HGET', k, m)
  local better = not cur
  if cur then
    local cm, cs = string.match(cur, '^(%d+):(%d+)$')
    better = tonumber(ms) > tonumber(cm) or (tonumber(ms) == tonumber(cm) and tonumber(s) > tonumber(cs))
  end
  if better then call('HSET', k, m, ms .. ':' .. s) end
end
for u, first, last in gmatch(T[19], "(%d+)\t(%d+)\t(%d+)\n") do
  local k = T[7] .. u .. T[8]
  local f, l = call('HGET', k, 'first'), call('HGET', k, 'last')
  local setf = not f or #first < #f or (#first == #f and first < f)
  local setl = not l or #last > #l or (#last == #l and last > l)
  if setf and setl then call('HSET', k, 'first', first, 'last', last)
  elseif setf then call('HSET', k, 'first', first)
  elseif setl then call('HSET', k, 'last', last) end
end
local day_movies, days = {}, {}
for m, d, users in gmatch(T[20], "([^\t\n]+)\t(%d+)\t([%d,]+)\n") do
  local k = T[9] .. m .. T[10] .. d .. T[11]
  if string.find(users, ',', 1, true) then
    local us = {}
    for u in gmatch(users, "%d+") do us[#us + 1] = u end
    sadd(k, us)
  else
    call('SADD', k, users)
  end
  call('PEXPIREAT', k, expire_at)
  local movies = day_movies[d]
  if not movies then movies = {}; day_movies[d] = movies; days[#days + 1] = d end
  movies[#movies + 1] = m
end
for _, d in ipairs(days) do
  local k = T[15] .. d .. T[16]
  sadd(k, day_movies[d])
  call('PEXPIREAT', k, expire_at)
end
for u, ms in gmatch(T[21], "(%d+)\t(%d+)\n") do
  call('ZADD', T[12], 'LT', ms, u)
end
return 1
"""


# One round trip, one command. The read is a small Lua script run by EVALSHA:
# it does HGETALL progress, HGETALL ratings, ZRANGE recent WITHSCORES and HGETALL profile
# on the server and joins each of the first three replies into one tab-separated string.
# A pipeline of those four commands is one round trip too, but the client parses every
# element of its reply. Measured for a user with 100 movies (~380 reply elements) against
# a local redis-server on this 2-core box, CPU per read:
#
# - client, with hiredis: ~390 us for the pipeline, ~280 us for the script (decoding
#   included); without hiredis ~940 us against ~290 us;
# - Redis: ~55 us for the four commands, ~100 us for the script.
#
# So the script saves ~15% of the CPU of a read on one machine (and two thirds without
# hiredis), at a similar median latency (~0.45 ms here, under other load). The joins cannot
# be ambiguous: movie ids hold no tab (``movierec.wire`` rejects them, and the consumer's
# own merge script splits on tabs), and the script drops any hand-written field or value
# that holds one.
#
# KEYS: progress, ratings, recent, profile of one user. Returns {progress, ratings, recent}
# as "field\tvalue\t..." strings and the profile as the plain HGETALL array. pcall: a key
# of the wrong type reads as empty instead of failing the whole read.
_READ_USER_STATE = r"""
local out = {}
for i = 1, 3 do
  local r
  if i == 3 then r = redis.pcall('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES')
  else r = redis.pcall('HGETALL', KEYS[i]) end
  local kept = {}
  if not r.err then
    for j = 1, #r - 1, 2 do
      local f, v = r[j], r[j + 1]
      if not string.find(f, '\t', 1, true) and not string.find(v, '\t', 1, true) then
        kept[#kept + 1] = f
        kept[#kept + 1] = v
      end
    end
  end
  out[i] = table.concat(kept, '\t')
end
local p = redis.pcall('HGETALL', KEYS[4])
if p.err then p = {} end
out[4] = p
"""
READ_USER = _READ_USER_STATE + "return out\n"


# READ_USER with a digest, and optionally a walk step first: KEYS as READ_USER, then
# optionally the four walk keys of the user (``stores.redis_walks``); ARGV[1] the digest
# the caller holds ("" for none), ARGV[2] the walk's gap in ms (with the walk keys).
# Returns {digest, walk} when the state still has that digest, else {digest, walk,
# progress, ratings, recent, profile}; walk is the run the step made (an integer >= 1),
# 0 when no step was asked, or "ERR <why>" when the step failed (a read-only replica
# refusing its SET, say): pcall keeps a failed step from failing the read, so the guard
# fails open while the features still arrive. The digest is SHA-1 over the four parts as
# READ_USER returns them (the profile's fields and values joined by tabs, after a
# newline); a state that did not change reads the same bytes (a hash keeps its field
# order until it is written), so a holder of the digest skips the transfer and decoding of
# an unchanged state. SHA-1 of a few KB costs Redis a few microseconds (redis.sha1hex).
READ_USER_IF_CHANGED = WALK_FUNCTION + r"""
local walk = 0
if #KEYS == 8 then
  local ok, run = pcall(walk_step, KEYS[5], KEYS[6], KEYS[7], KEYS[8], ARGV[2])
  if ok then walk = run
  elseif type(run) == 'table' then walk = 'ERR ' .. tostring(run.err)
  else walk = 'ERR ' .. tostring(run) end
end
""" + _READ_USER_STATE + r"""
local digest = redis.sha1hex(out[1] .. '\n' .. out[2] .. '\n' .. out[3] .. '\n' .. table.concat(p, '\t'))
if digest == ARGV[1] then return {digest, walk} end
return {digest, walk, out[1], out[2], out[3], p}
"""

# ARGV: served-key prefix and suffix, by-user-key prefix and suffix, TTL (ms), records kept
# per user, then the records, one a line: "<request id>\t<user>\t<time ms>\t<json>\n"
# (compact JSON escapes tabs and newlines, so neither occurs raw in it).
WRITE_SERVED = r"""
local ttl, keep = tonumber(ARGV[5]), tonumber(ARGV[6])
local touched = {}
for rid, user, ms, json in string.gmatch(ARGV[7], "([^\t\n]+)\t(%d+)\t(%d+)\t([^\n]*)\n") do
  redis.call('SET', ARGV[1] .. rid .. ARGV[2], json, 'PX', ttl)
  local index = ARGV[3] .. user .. ARGV[4]
  redis.call('ZADD', index, ms, rid)
  touched[index] = true
end
for index in pairs(touched) do
  redis.call('ZREMRANGEBYRANK', index, 0, -keep - 1)
  redis.call('PEXPIRE', index, ttl)
end
return 1
"""
PROVENANCE_CHUNK = 50
"""Records per script call: Redis serves no one else while a script runs, and a record
costs it ~20 us, so a call stays near a millisecond."""
