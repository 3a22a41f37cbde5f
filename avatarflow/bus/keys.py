"""Redis key layout and the server-side scripts of the Redis bus.

Every key of the stream bus carries a shard tag ``{n}`` (``n`` in 0 .. shards-1): a session
lives in the shard its id hashes to, and its keys share that shard's Redis Cluster slot with
the join streams that announce it and the liveness keys its TAKE checks, so every script
touches one slot. With one shard (a single Redis) every tag is ``{0}``.

Per session ``sid`` (in shard ``n``):
  af:{n}:s:<sid>:<topic>  the session's data stream on a topic (audio ... frames); read by the
                          topic's consumer group, in order; an entry is deleted once that
                          group acknowledged it, so ``stream_maxlen`` only bounds a backlog
  af:{n}:s:<sid>:ctl      urgent control (interrupt, control change); every stage's group
                          reads it, ahead of its data
  af:{n}:own:<group>:<sid>  hash: owner (consumer name), join (entry id), state, turn
Per topic a stage consumes, per shard:
  af:{n}:join:<topic>     one entry per session, read by ``<stage>-workers``; the entry stays
                          pending with the replica that owns the session until it ends, so a
                          dead replica's sessions are found (XPENDING) and claimed (TAKE)
Per replica, per shard:
  af:{n}:alive:<group>:<consumer>   the replica's lease, renewed every heartbeat; once it
                                    lapsed, TAKE lets another replica have its sessions
Per consumer group:
  af:{0}:load:<group>     hash: consumer -> "<sessions held> <valid until, unix ms>", written
                          every heartbeat, so new sessions go to the least busy replicas
Once per deployment:
  af:bus:shards           the shard count, recorded by the first process: all must agree
Portraits:
  af:avatar:<avatar_id>:image and af:avatar:<avatar_id>/<mode>/<w>x<h>  (analysis)
"""

from __future__ import annotations

import zlib

from avatarflow.runtime.registry import FRAMES, PIPELINE

GATEWAY_GROUP = "gateway"
CTL = "ctl"
# The consumer group of every topic: the stage reading it, or the gateway for final frames.
GROUP_OF = {spec.input: spec.group for spec in PIPELINE} | {FRAMES: GATEWAY_GROUP}
STAGE_GROUPS = tuple(spec.group for spec in PIPELINE)
SHARDS = "af:bus:shards"


def shard_of(sid: str, shards: int = 1) -> int:
    """The shard session ``sid`` lives in: a stable hash of the id, the same in every process."""
    return zlib.crc32(sid.encode()) % shards if shards > 1 else 0


def stream(sid: str, topic: str, shards: int = 1) -> str:
    return f"af:{{{shard_of(sid, shards)}}}:s:{sid}:{topic}"


def own(group: str, sid: str, shards: int = 1) -> str:
    return f"af:{{{shard_of(sid, shards)}}}:own:{group}:{sid}"


def join(topic: str, shard: int = 0) -> str:
    return f"af:{{{shard}}}:join:{topic}"


def join_of(sid: str, topic: str, shards: int = 1) -> str:
    """The join stream that announces session ``sid`` on ``topic``."""
    return join(topic, shard_of(sid, shards))


def alive(group: str, consumer: str, shard: int = 0) -> str:
    return f"af:{{{shard}}}:alive:{group}:{consumer}"


def load(group: str) -> str:
    return f"af:{{0}}:load:{group}"


def sid_of(key: str) -> str:
    """The session id inside a session stream's name (af:{n}:s:<sid>:<topic>)."""
    return key[key.index(":s:") + 3:key.rindex(":")]


def avatar(key: str) -> str:
    return f"af:avatar:{key}"


# Opens a session at its source: consumer groups on the first data stream, the control stream
# (one group per stage) and the frames stream (the gateway), then announces it.
# KEYS: data stream, ctl stream, frames stream, join stream, own hash (the gateway's)
# ARGV: data group, ttl ms, sid, owner, then the stage groups
OPEN = """
redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
for i = 5, #ARGV do
  redis.pcall('XGROUP', 'CREATE', KEYS[2], ARGV[i], '0', 'MKSTREAM')
end
redis.pcall('XGROUP', 'CREATE', KEYS[3], 'gateway', '0', 'MKSTREAM')
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
redis.call('HSET', KEYS[5], 'owner', ARGV[4], 'turn', 0)
redis.call('PEXPIRE', KEYS[5], ARGV[2])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', 100000, '*', 's', ARGV[3])
return 1
"""

# Passes a join entry a replica read on to the others (it has more sessions than another live
# replica): the entry is acknowledged, deleted and added again as a new one, which the next
# replica that reads the join stream gets. Returns the new id, or false when it was deleted.
# KEYS: join stream
# ARGV: group, entry id
PASS = """
local found = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if #found == 0 then return false end
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', 100000, '*', unpack(found[1][2]))
"""

# Takes a session for a consumer, atomically. Refused ('held') while another consumer owns it
# and that owner's liveness key exists: a takeover needs the owner's lease to have lapsed, and
# a replica restarted under the owner's name resumes its own sessions. Otherwise the consumer
# becomes the owner, and the session's join entry plus every entry of its control and data
# streams pending in the group (read by a previous owner, never committed) are claimed for it,
# in order. Returns the saved state, the turn and those entries (control, then data); 'gone'
# when the data stream no longer exists (the join entry is then retired). Entries deleted while
# pending are acknowledged and left out (Redis 6 and 7 reply differently for them).
# KEYS: own hash, data stream, join stream, ctl stream
# ARGV: consumer, join id, group, ttl ms, liveness key prefix (af:{n}:alive:<group>:, the
# session's shard: the owner's lease key is in the session's slot)
TAKE = """
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('XACK', KEYS[3], ARGV[3], ARGV[2])
  redis.call('XDEL', KEYS[3], ARGV[2])
  redis.call('DEL', KEYS[1])
  return 'gone'
end
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] and redis.call('EXISTS', ARGV[5] .. owner) == 1 then
  return 'held'
end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'join', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('XCLAIM', KEYS[3], ARGV[3], ARGV[1], 0, ARGV[2], 'JUSTID')
local function claim(stream)
  local out = {}
  local pending = redis.pcall('XPENDING', stream, ARGV[3], '-', '+', 10000)
  if type(pending) ~= 'table' or pending['err'] then return out end
  for i = 1, #pending, 500 do
    local ids, got = {}, {}
    for j = i, math.min(i + 499, #pending) do ids[#ids + 1] = pending[j][1] end
    for _, e in ipairs(redis.call('XCLAIM', stream, ARGV[3], ARGV[1], 0, unpack(ids))) do
      if e then out[#out + 1] = e; got[e[1]] = true end
    end
    for _, id in ipairs(ids) do
      if not got[id] then redis.call('XACK', stream, ARGV[3], id) end
    end
  end
  return out
end
local ctl, data = claim(KEYS[4]), claim(KEYS[2])
return {redis.call('HGET', KEYS[1], 'state') or '', redis.call('HGET', KEYS[1], 'turn') or '0',
        ctl, data}
"""

# Publishes a consumer's outputs, acknowledges its input (and deletes it from the session's
# data stream) and saves the session state, only if the consumer still owns the session
# (fencing: a replica presumed dead cannot write).
# KEYS: own hash, ack stream, output stream, input join stream, output join stream, input data
# stream. ARGV: consumer, group, entry id, state mode (k keep | s set | e end), state, ttl ms,
# maxlen, output group, sid, n, session turn, then per output: tier, turn, publish time, message
COMMIT = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
local n = tonumber(ARGV[10])
for i = 0, n - 1 do
  local b = 12 + i * 4
  if ARGV[b] == 'S' then
    redis.pcall('XGROUP', 'CREATE', KEYS[3], ARGV[8], '0', 'MKSTREAM')
    if KEYS[5] ~= KEYS[3] then
      redis.call('XADD', KEYS[5], 'MAXLEN', '~', 100000, '*', 's', ARGV[9])
    end
  end
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*',
             'k', ARGV[b], 't', ARGV[b + 1], 'p', ARGV[b + 2], 'm', ARGV[b + 3])
end
if n > 0 then redis.call('PEXPIRE', KEYS[3], ARGV[6]) end
if ARGV[3] ~= '' then
  redis.call('XACK', KEYS[2], ARGV[2], ARGV[3])
  -- A session's data stream has one reader, its topic's group: an entry it acknowledged is
  -- done with, and deleting it keeps the stream as short as the work still to do. Never on
  -- the control stream, which every stage's group reads.
  if KEYS[2] == KEYS[6] then redis.call('XDEL', KEYS[2], ARGV[3]) end
end
if ARGV[4] == 'e' then
  local j = redis.call('HGET', KEYS[1], 'join')
  if j then
    redis.call('XACK', KEYS[4], ARGV[2], j)
    redis.call('XDEL', KEYS[4], j)
  end
  redis.call('DEL', KEYS[1], KEYS[6])
  return 1
end
if ARGV[4] == 's' then redis.call('HSET', KEYS[1], 'state', ARGV[5]) end
redis.call('HSET', KEYS[1], 'turn', ARGV[11])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
"""
