"""Every Lua script Signoff runs in Redis, with the keys and arguments each takes.

A script runs atomically: no other client's command lands between its reads and its
writes, which is what makes a guarded state change, a lease release or an inbox hand-off
all or nothing. Each script is registered once per client (``register_script``: EVALSHA,
loaded again on NOSCRIPT) by the module that runs it: :mod:`engine.state.store` runs the
execution and token scripts, :mod:`engine.state.inbox` the inbox ones,
:mod:`engine.state.slots` the concurrency ones.

Every key a script reads or writes is passed in KEYS, none is built inside a script, so
each script's comment below is the whole list of what it may touch. A pub/sub channel is
not a key and comes in ARGV.
"""

from __future__ import annotations

# -- executions (engine.state.store) -----------------------------------------------------------

# COMMIT: apply one guarded change to an execution (Store.commit).
# KEYS[1]  the execution hash              KEYS[4]  the waiting index
# KEYS[2]  its audit list                  KEYS[5]  the running index
# KEYS[3]  its lease
# KEYS[6 .. 5+S]  the status indexes, one per status, in the order of ARGV[4 ..]
# KEYS[6+S ..]    the indexes the change's zadd/zrem entries name (by KEYS position)
# ARGV[1]  the change as JSON: guards (guard_status: statuses, guard_head: audit head,
#          guard_field: [field, text it must contain], guard_lease: token, guard_hlen:
#          [KEYS position, how many fields that hash must have]), writes (set:
#          fields, del: field names, status, waiting/running: add|remove with a score,
#          zadd: [[KEYS position, score, member]], zrem: [[KEYS position, member]],
#          hset: [[KEYS position, field, value]] into other hashes (a parent's children),
#          events: [[body, hash]] appended in order), lease_ttl_ms or release
# ARGV[2]  the execution id (its member in the indexes)
# ARGV[3]  the pub/sub channel told a new status
# ARGV[4 .. 3+S]  every status name (S of them), in the order of their index keys
# Returns {1, status, audit head, 'ok'} when applied, else {0, status, audit head, reason}
# with reason status | head | field | lease | hlen (a guard failed) or missing (no such execution;
# status and head are then '').
COMMIT = """
local spec = cjson.decode(ARGV[1])
local xkey, akey, lkey = KEYS[1], KEYS[2], KEYS[3]
local cur = redis.call('HMGET', xkey, 'st', 'ah', 't0ms')
if not cur[1] then return {0, '', '', 'missing'} end
if spec.guard_status then
  local ok = false
  for _, s in ipairs(spec.guard_status) do if s == cur[1] then ok = true end end
  if not ok then return {0, cur[1], cur[2], 'status'} end
end
if spec.guard_head and spec.guard_head ~= cur[2] then return {0, cur[1], cur[2], 'head'} end
if spec.guard_field then
  local v = redis.call('HGET', xkey, spec.guard_field[1])
  if not v or string.find(v, spec.guard_field[2], 1, true) == nil then
    return {0, cur[1], cur[2], 'field'}
  end
end
if spec.guard_lease then
  if redis.call('GET', lkey) ~= spec.guard_lease then return {0, cur[1], cur[2], 'lease'} end
end
if spec.guard_hlen then
  if redis.call('HLEN', KEYS[spec.guard_hlen[1]]) ~= spec.guard_hlen[2] then
    return {0, cur[1], cur[2], 'hlen'}
  end
end
if spec.set then
  local flat = {}
  for k, v in pairs(spec.set) do table.insert(flat, k); table.insert(flat, v) end
  if #flat > 0 then redis.call('HSET', xkey, unpack(flat)) end
end
if spec.del and #spec.del > 0 then redis.call('HDEL', xkey, unpack(spec.del)) end
if spec.status and spec.status ~= cur[1] then
  local status_index = {}
  for i = 4, #ARGV do status_index[ARGV[i]] = KEYS[i + 2] end
  redis.call('HSET', xkey, 'st', spec.status)
  redis.call('ZREM', status_index[cur[1]], ARGV[2])
  redis.call('ZADD', status_index[spec.status], tonumber(cur[3]), ARGV[2])
  redis.call('PUBLISH', ARGV[3], spec.status)
end
if spec.waiting == 'add' then redis.call('ZADD', KEYS[4], spec.waiting_score, ARGV[2]) end
if spec.waiting == 'remove' then redis.call('ZREM', KEYS[4], ARGV[2]) end
if spec.running == 'add' then redis.call('ZADD', KEYS[5], spec.running_score, ARGV[2]) end
if spec.running == 'remove' then redis.call('ZREM', KEYS[5], ARGV[2]) end
if spec.zadd then
  for _, z in ipairs(spec.zadd) do redis.call('ZADD', KEYS[z[1]], z[2], z[3]) end
end
if spec.zrem then
  for _, z in ipairs(spec.zrem) do redis.call('ZREM', KEYS[z[1]], z[2]) end
end
if spec.hset then
  for _, h in ipairs(spec.hset) do redis.call('HSET', KEYS[h[1]], h[2], h[3]) end
end
local head = cur[2]
if spec.events then
  for _, e in ipairs(spec.events) do
    redis.call('RPUSH', akey, e[2] .. e[1])
    head = e[2]
  end
  redis.call('HSET', xkey, 'ah', head)
end
if spec.guard_lease then
  if spec.release then redis.call('DEL', lkey)
  elseif spec.lease_ttl_ms then redis.call('PEXPIRE', lkey, spec.lease_ttl_ms) end
end
return {1, spec.status or cur[1], head, 'ok'}
"""

# RELEASE_LEASE: give up a lease, only if it is still ours (Store.release_lease).
# KEYS[1] the lease; ARGV[1] our token. Returns 1 when deleted, 0 when another holds it
# or it lapsed.
RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# ANNOTATE: set one field of an existing execution, never creating one
# (Store.set_annotation). KEYS[1] the execution hash; ARGV[1] the field, ARGV[2] its
# value. Returns 1 when written, 0 when there is no such execution.
ANNOTATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# COMPARE_AND_SET: set a value only if it still holds what the caller read
# (Store.compare_and_set). KEYS[1] the value; ARGV[1] what it must hold, ARGV[2] the new
# value. Returns 1 when set, 0 when it held something else (or nothing).
COMPARE_AND_SET = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) return 1 end
return 0
"""

# REMOVE_INSTANCE: take a member out of sorted-set indexes only where its score is still
# the one given (Store.index_remove_instance): an index entry for an execution is one
# instance of its waiting (scored by when it started waiting), and a later instance that
# replaced it must stay. KEYS: the indexes; ARGV[1] the member, ARGV[2] the score.
# Returns how many entries were removed.
REMOVE_INSTANCE = """
local removed = 0
for _, key in ipairs(KEYS) do
  local score = redis.call('ZSCORE', key, ARGV[1])
  if score and tonumber(score) == tonumber(ARGV[2]) then
    removed = removed + redis.call('ZREM', key, ARGV[1])
  end
end
return removed
"""

# REVIEW_PAGE: a page of an index and the review fields of the executions the caller
# expects on it, in one command (Store.review_page). KEYS[1] the index; KEYS[2 ..] the
# execution hashes; ARGV[1], ARGV[2] the page's first and last rank; ARGV[3 ..] the
# fields. Returns {the page's members, the index's size, each hash's fields (HMGET)}.
REVIEW_PAGE = """
local out = {redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[2]), redis.call('ZCARD', KEYS[1])}
for i = 2, #KEYS do out[i + 1] = redis.call('HMGET', KEYS[i], unpack(ARGV, 3)) end
return out
"""

# -- API tokens (engine.state.store) -----------------------------------------------------------

# ADD_TOKEN: keep a new API token, its name unique (Store.add_token). KEYS[1] the token
# names hash, KEYS[2] the token's record; ARGV[1] its name, ARGV[2] the SHA-256 of its
# secret, ARGV[3] its record (JSON). Returns 1 when added, 0 when the name is taken
# (nothing written).
ADD_TOKEN = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[3])
return 1
"""

# REVOKE_TOKEN: forget a token, name and record together (Store.revoke_token). KEYS[1] the
# token names hash, KEYS[2] the record the caller found for the name; ARGV[1] the name,
# ARGV[2] the SHA-256 the caller read for it. Returns 1 when revoked, 0 when the name no
# longer maps to that hash (revoked, or made again, meanwhile).
REVOKE_TOKEN = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return 1
"""

# -- inboxes (engine.state.inbox) --------------------------------------------------------------

# INBOX_PUT: append tasks to an inbox and claim its "drain queued" flag (Inbox.put,
# AsyncInbox). KEYS[1] the inbox list, KEYS[2] its drain flag, KEYS[3] the set of inboxes;
# ARGV[1] the flag's lifetime (ms), ARGV[2] the queue name, ARGV[3 ..] the tasks (JSON).
# Returns 1 when the flag was free: the caller must enqueue a drain; 0 when one is queued.
INBOX_PUT = """
redis.call('RPUSH', KEYS[1], unpack(ARGV, 3))
redis.call('SADD', KEYS[3], ARGV[2])
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then return 1 end
return 0
"""

# INBOX_RING: append tasks to an inbox and, unless a drain is queued already, queue one: the
# queue's drain job, one RQ job kept per queue, pushed on its RQ queue (Inbox.put and
# Inbox.ensure_drain with an RQ drain job; engine.worker.scheduler). Claiming the flag and
# queueing the drain are one step, so a put inside another transaction (an execution's
# creation) needs no second round trip. KEYS[1] the inbox list, KEYS[2] its drain flag,
# KEYS[3] the set of inboxes, KEYS[4] the RQ queue's list, KEYS[5] RQ's set of queues,
# KEYS[6] the drain job's hash; ARGV[1] the flag's lifetime (ms), ARGV[2] the queue name,
# ARGV[3] the RQ queue's key (its member in KEYS[5]), ARGV[4] the drain job's id, ARGV[5]
# n, the number of items that follow for the job's hash, ARGV[6 .. 5+n] its fields and
# values (written again at each ring: a job RQ deleted or marked failed is whole again),
# ARGV[6+n ..] the tasks (JSON; none to only queue a drain). Returns 1 when a drain was
# queued, 0 when one was queued already.
INBOX_RING = """
local n = tonumber(ARGV[5])
if #ARGV > 5 + n then
  redis.call('RPUSH', KEYS[1], unpack(ARGV, 6 + n))
  redis.call('SADD', KEYS[3], ARGV[2])
end
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then return 0 end
redis.call('HSET', KEYS[6], unpack(ARGV, 6, 5 + n))
redis.call('RPUSH', KEYS[4], ARGV[4])
redis.call('SADD', KEYS[5], ARGV[3])
return 1
"""

# NEXT_DRAIN: after a drain, the drain job a worker may run next without going back to
# RQ's loop (SignoffWorker): the first of its queues, in its order, that has a job waiting,
# if that job is the queue's drain job; it is taken off the queue. KEYS: the worker's RQ
# queue lists, in the order it serves them; ARGV: each queue's drain job id, in the same
# order. Returns the queue's position (1 ..), or 0 when the first job waiting is another
# (RQ's loop runs it) or no queue has one.
NEXT_DRAIN = """
for i, key in ipairs(KEYS) do
  local head = redis.call('LINDEX', key, 0)
  if head then
    if head == ARGV[i] then
      redis.call('LPOP', key)
      return i
    end
    return 0
  end
end
return 0
"""

# INBOX_START: a drain begins (Inbox.drain): give up the "drain queued" flag (from now on
# a new task queues another drain), start the drain's heartbeat, add it to the inbox's
# takers, move the tasks of the "later" set that have come due to the tail of the inbox (as
# INBOX_DUE), and take the first task (as INBOX_NEXT). KEYS[1] the drain flag, KEYS[2] the
# drain's heartbeat, KEYS[3] the inbox's takers, KEYS[4] the inbox's "later" set, KEYS[5]
# the inbox list, KEYS[6] the drain's taking list, KEYS[7 ..] the RQ queues the worker
# serves first; ARGV[1] the heartbeat's lifetime (ms), ARGV[2] the drain's name, ARGV[3]
# now (ms since the epoch), ARGV[4] at most how many to move, ARGV[5] '1' to take the first
# task. Returns {how many tasks were moved, the first task (moved to the taking list), or 0
# when the inbox is empty (the drain has ended: heartbeat deleted, out of the takers), -1
# when a queue in KEYS[7 ..] has jobs waiting, -2 when not asked to take one}.
INBOX_START = """
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
redis.call('SADD', KEYS[3], ARGV[2])
local due = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', ARGV[3], 'LIMIT', 0, tonumber(ARGV[4]))
for _, member in ipairs(due) do
  local bar = string.find(member, '|', 1, true)
  redis.call('RPUSH', KEYS[5], string.sub(member, bar + 1))
  redis.call('ZREM', KEYS[4], member)
end
if ARGV[5] ~= '1' then return {#due, -2} end
for i = 7, #KEYS do
  if redis.call('LLEN', KEYS[i]) > 0 then return {#due, -1} end
end
local task = redis.call('LMOVE', KEYS[5], KEYS[6], 'LEFT', 'RIGHT')
if not task then
  redis.call('DEL', KEYS[2])
  redis.call('SREM', KEYS[3], ARGV[2])
  return {#due, 0}
end
return {#due, task}
"""

# INBOX_NEXT: acknowledge the previous task (if any), keep the heartbeat and the drain's
# place among the takers (a sweep drops a drain whose heartbeat lapsed during one long
# task), take the next task (Inbox.drain). KEYS[1] the inbox list, KEYS[2] the drain's
# taking list, KEYS[3] its heartbeat, KEYS[4] the inbox's takers, KEYS[5 ..] the RQ queues
# the worker serves first; ARGV[1] the task just finished ('' for none), ARGV[2] the
# heartbeat's lifetime (ms), ARGV[3] the drain's name, ARGV[4] '1' to end the drain when
# the inbox is empty (its heartbeat deleted, out of the takers: nothing left behind).
# Returns the next task (moved to the taking list), nil when the inbox is empty, or -1 when
# a queue in KEYS[5 ..] has jobs waiting: the drain yields to them.
INBOX_NEXT = """
if ARGV[1] ~= '' then redis.call('LREM', KEYS[2], 1, ARGV[1]) end
redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
redis.call('SADD', KEYS[4], ARGV[3])
for i = 5, #KEYS do
  if redis.call('LLEN', KEYS[i]) > 0 then return -1 end
end
local task = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
if not task and ARGV[4] == '1' then
  redis.call('DEL', KEYS[3])
  redis.call('SREM', KEYS[4], ARGV[3])
end
return task
"""

# INBOX_RECOVER: put a dead drain's tasks back at the head of the inbox, oldest first, and
# forget the drain (Inbox.recover). KEYS[1] the inbox list, KEYS[2] the drain's taking
# list, KEYS[3] its heartbeat, KEYS[4] the inbox's takers; ARGV[1] the drain's name.
# Returns how many tasks were put back, or -1 when the drain's heartbeat is alive
# (nothing touched).
INBOX_RECOVER = """
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local n = 0
while redis.call('LMOVE', KEYS[2], KEYS[1], 'RIGHT', 'LEFT') do n = n + 1 end
redis.call('SREM', KEYS[4], ARGV[1])
return n
"""

# INBOX_LATER: put off a task that failed till its next try (Inbox.drain): take it off the
# drain's taking list and add it to the inbox's "later" set, in one step. KEYS[1] the
# drain's taking list, KEYS[2] the inbox's "later" set; ARGV[1] the task as it was taken,
# ARGV[2] when it is due (ms since the epoch), ARGV[3] the task to try then (tag|task JSON,
# its count of failed tries raised). Returns 1.
INBOX_LATER = """
redis.call('LREM', KEYS[1], 1, ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return 1
"""

# INBOX_DUE: move the tasks of the "later" set that have come due to the tail of the inbox,
# soonest first, without their tags (Inbox.move_due). KEYS[1] the "later" set, KEYS[2] the
# inbox list; ARGV[1] now (ms since the epoch), ARGV[2] at most how many. Returns how many.
INBOX_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  local bar = string.find(member, '|', 1, true)
  redis.call('RPUSH', KEYS[2], string.sub(member, bar + 1))
  redis.call('ZREM', KEYS[1], member)
end
return #due
"""

# -- concurrency groups (engine.state.slots) ---------------------------------------------------

# SLOT_ADMIT: decide, for a run starting in a concurrency group, whether it takes a slot now
# (Slots.admit). The check and the taking are one step: two runs racing for the last slot
# never both get it. KEYS[1] the group's slots, KEYS[2] its queue, KEYS[3] its queue's meta,
# KEYS[4] the groups hash, KEYS[5] the arrival counter, KEYS[6] the displaced runs (each to
# be cancelled: the sweep does it if the caller dies first); ARGV[1] the execution id, ARGV[2] the
# strategy (drop | cancel-in-progress | queue), ARGV[3] max, ARGV[4] queue-size, ARGV[5] now
# (ms), ARGV[6] queue-ttl (ms), ARGV[7] the group's id, ARGV[8] its key as rendered.
# Returns {'run', displaced ids...} (cancel-in-progress: the oldest holders, already out of
# the slots), {'queued', position}, {'dropped'} or {'full'}. A run that holds a slot or waits
# in the queue already gets the same answer again (recovery may ask twice).
SLOT_ADMIT = """
local id = ARGV[1]
if redis.call('ZSCORE', KEYS[1], id) then return {'run'} end
local rank = redis.call('ZRANK', KEYS[2], id)
if rank then return {'queued', rank + 1} end
local max = tonumber(ARGV[3])
local held = redis.call('ZCARD', KEYS[1])
if ARGV[2] == 'queue' then
  local waiting = redis.call('ZCARD', KEYS[2])
  if waiting == 0 and held < max then
    redis.call('ZADD', KEYS[1], ARGV[5], id)
    redis.call('HSET', KEYS[4], ARGV[7], ARGV[8])
    return {'run'}
  end
  if waiting >= tonumber(ARGV[4]) then return {'full'} end
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[5]), id)
  redis.call('HSET', KEYS[3], id, ARGV[5] .. ' ' .. ARGV[6] .. ' ' .. ARGV[3])
  redis.call('HSET', KEYS[4], ARGV[7], ARGV[8])
  return {'queued', waiting + 1}
end
local out = {'run'}
if held >= max then
  if ARGV[2] == 'drop' then return {'dropped'} end
  for _, other in ipairs(redis.call('ZRANGE', KEYS[1], 0, held - max)) do
    redis.call('ZREM', KEYS[1], other)
    redis.call('HSET', KEYS[6], other, id .. ' ' .. ARGV[8])
    table.insert(out, other)
  end
end
redis.call('ZADD', KEYS[1], ARGV[5], id)
redis.call('HSET', KEYS[4], ARGV[7], ARGV[8])
return out
"""

# SLOT_RELEASE: give back a run's slot (or its place in the queue), exactly once, and hand
# the free slots to the queue's oldest runs (Slots.release). KEYS[1] the group's slots,
# KEYS[2] its queue, KEYS[3] its queue's meta, KEYS[4] the groups hash, KEYS[5] the running
# index; ARGV[1] the execution id ('' to only hand out free slots), ARGV[2] now (ms),
# ARGV[3] the deadline the running index gets for each run taken off the queue (ms),
# ARGV[4] the group's id. Each run taken off the queue, given a slot or expired (waited
# past its queue-ttl), enters the running index, so the sweep finishes the hand-over if
# the caller dies before it has. Returns {released (1 when the run held a slot, 0 when it
# did not: released before, or never held), how many were given a slot, their ids ...,
# then the expired ids ...}.
SLOT_RELEASE = """
local released = 0
if ARGV[1] ~= '' then
  released = redis.call('ZREM', KEYS[1], ARGV[1])
  if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then redis.call('HDEL', KEYS[3], ARGV[1]) end
end
local now = tonumber(ARGV[2])
local promoted, expired = {}, {}
while true do
  local head = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not head then break end
  local queued, ttl, max = string.match(redis.call('HGET', KEYS[3], head) or '',
                                        '^(%d+) (%d+) (%d+)$')
  if not queued or now >= tonumber(queued) + tonumber(ttl) then
    table.insert(expired, head)
  elseif redis.call('ZCARD', KEYS[1]) < tonumber(max) then
    redis.call('ZADD', KEYS[1], now, head)
    table.insert(promoted, head)
  else
    break
  end
  redis.call('ZREM', KEYS[2], head)
  redis.call('HDEL', KEYS[3], head)
  redis.call('ZADD', KEYS[5], ARGV[3], head)
end
if redis.call('ZCARD', KEYS[1]) == 0 and redis.call('ZCARD', KEYS[2]) == 0 then
  redis.call('HDEL', KEYS[4], ARGV[4])
end
local out = {released, #promoted}
for _, id in ipairs(promoted) do table.insert(out, id) end
for _, id in ipairs(expired) do table.insert(out, id) end
return out
"""
