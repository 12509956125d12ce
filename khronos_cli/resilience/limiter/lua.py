"""The Lua side of the shared rate decision (:class:`.backends.RedisRates`): one script decides a
job's admission in one round trip, all or nothing; another writes a halt (Telegram's
``retry_after``) that only ever moves later. Every key a script touches is passed in ``KEYS`` and
carries the bot's hash tag, so each call stays on one Redis Cluster slot."""

from __future__ import annotations

from typing import Final

__all__ = ["DECIDE", "HALT"]

DECIDE: Final = """
-- KEYS: key state, global window zset, global halt, key halt, global last start
-- ARGV[1]: little-endian doubles (Redis's C struct library reads them): now_ms (0: the server's
--   TIME), upkeep (1: drop the starts that left the window, push its expiry back), weight, then
--   the limiter's n_global_rates, (interval_ms, limit, blocking_rank) per rate,
--   longest_interval_ms, global_ttl_ms, global_min_ms, then the key's key_ttl_ms, n_key_rates,
--   (emission_us, burst) per rate. The client packs the limiter's and the key's parts once and
--   joins them: separate arguments cost more to pack and send than the whole decision costs
--   Redis, and text split with gmatch cost the script a fifth of its time.
-- ARGV[2]: this decision's member prefix in the global window.
-- A key's state is its theoretical arrival times (µs), packed doubles in one string key: read
-- with the halts in one MGET, written with its expiry in one SET. Each redis.call costs the
-- script a few µs whatever it does, so the script makes as few as it can: five for a chat's
-- message (TIME, MGET, ZCOUNT, SET, ZADD), six with the global spacing.
-- Returns 0 to admit (one integer: the common answer costs the client least to read), else
-- {level, wait_ms or blocking score, rank (-1: the spacing), now}
local A = {struct.unpack('<' .. string.rep('d', #ARGV[1] / 8), ARGV[1])}
local now = A[1]
if now == 0 then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local weight = A[3]
local ng = A[4]
local g = 5 + 3 * ng  -- longest interval, global ttl, spacing; then the key's numbers
local min_ms = A[g + 2]
local shared = redis.call('MGET', KEYS[3], KEYS[4], KEYS[5], KEYS[1])
for h = 1, 2 do
    local until_ms = tonumber(shared[h])
    if until_ms and until_ms > now then return {2 + h, until_ms - now, 0, now} end
end
local last = tonumber(shared[3])
if min_ms > 0 and last and now < last + min_ms then return {2, last + min_ms - now, -1, now} end
local nk = A[g + 4]
local tats
if nk > 0 then
    local format = '<' .. string.rep('d', nk)
    local stored = {}
    if shared[4] and #shared[4] == 8 * nk then stored = {struct.unpack(format, shared[4])} end
    local now_us = now * 1000
    local i = g + 5
    tats = {}
    for r = 1, nk do
        local emission = A[i]
        local burst = A[i + 1]
        i = i + 2
        local tat = stored[r] or 0
        if tat < now_us then tat = now_us end
        local new_tat = tat + weight * emission
        local allow_at = new_tat - burst * emission
        if allow_at > now_us then return {1, math.ceil((allow_at - now_us) / 1000), 0, now} end
        tats[r] = new_tat
    end
    tats = struct.pack(format, unpack(tats))
end
local i = 5
for r = 1, ng do
    local limit = A[i + 1]
    local rank = A[i + 2]
    local count = redis.call('ZCOUNT', KEYS[2], now - A[i], '+inf')
    if limit - count < weight then
        local blocking = redis.call('ZRANGE', KEYS[2], -1 - rank, -1 - rank, 'WITHSCORES')
        return {2, tonumber(blocking[2]) or -1, r - 1, now}
    end
    i = i + 3
end
if nk > 0 then redis.call('SET', KEYS[1], tats, 'PX', A[g + 3]) end
if ng > 0 then
    if weight == 1 then  -- the common job: no table to build
        redis.call('ZADD', KEYS[2], now, ARGV[2])
    else
        local batch = {}
        for w = 1, weight do
            batch[#batch + 1] = now
            batch[#batch + 1] = ARGV[2] .. w
        end
        redis.call('ZADD', KEYS[2], unpack(batch))
    end
    -- Upkeep, every few decisions of each client: starts older than the longest window count
    -- for nothing (ZCOUNT reads the window by time, ZRANGE by rank from the newest), so they
    -- are dropped; and the expiry is pushed back. The client asks for upkeep at least every
    -- quarter of the expiry (twice the longest window), so a start it adds in between is never
    -- lost before its window has passed.
    if A[2] > 0 then
        redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - A[g]))
        redis.call('PEXPIRE', KEYS[2], A[g + 1])
    end
end
if min_ms > 0 then redis.call('SET', KEYS[5], now, 'PX', math.max(1000, 2 * min_ms)) end
return 0
"""

HALT: Final = """
local current = tonumber(redis.call('GET', KEYS[1]))
local until_ms = tonumber(ARGV[1])
if current and current >= until_ms then return current end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return until_ms
"""
