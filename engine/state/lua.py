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
# KEYS[6 .. 5+S]  the status indexes, in the order of ARGV[4 ..]; only when the change
#                 sets a status (S is 0 otherwise): every status's, or, with guard_status,
#                 the guard's statuses' and the new one's
# KEYS[6+S ..]    the indexes the change's zadd/zrem entries name (by KEYS position)
# ARGV[1]  the change as JSON: guards (guard_status: statuses, guard_head: [ARGV position
#          of the audit head as stored, the same in hex as earlier versions stored it],
#          guard_field: [field, text it must contain], guard_waiting: [the path ``wp``
#          must hold, text ``w`` must contain when there is no ``wp``], guard_lease:
#          token, guard_hlen:
#          [KEYS position, how many fields that hash must have]), writes (set:
#          fields, setv: {field: ARGV position of its value} for values that are not
#          text (compressed), del: field names, status (nstatus: S), waiting/running:
#          add|remove with a score,
#          zadd: [[KEYS position, score, member]], zrem: [[KEYS position, member]],
#          hset: [[KEYS position, field, value]] into other hashes (a parent's children),
#          lrem: [[KEYS position, ARGV position]]: that entry taken off that list, once
#          (the inbox task the change acknowledges),
#          carry: [KEYS position of a list, ARGV position of its entry, ARGV position of
#          another, KEYS position of an inbox]: the entry taken off the list, once, and,
#          when that inbox is empty, the other put on the list in its place (the inbox
#          task the change acknowledges hands its drain the task that follows from it),
#          events: [first, last] ARGV positions of the audit entries to append, in
#          order, as stored, with head: the ARGV position of the last one's hash as
#          stored), lease_ttl_ms or release; claim: [token, ttl ms]: the lease must be
#          free (reason 'lease' otherwise), and once applied it is the caller's for ttl
#          ms (0: left free; a segment's first write that is also its last);
#          notes: true to return the execution's annotations (n:…) as they are now
# ARGV[2]  the execution id (its member in the indexes)
# ARGV[3]  the pub/sub channel told a new status
# ARGV[4 .. 3+S]  those statuses' names (S of them), in the order of their index keys
#                 (none when the change sets no status)
# ARGV[4+S ..]    the values setv names, guard_head's, the audit entries, their head
# Returns {1, status, audit head, 'ok'} when applied (with notes or carry, a fifth element:
# the annotations' names and values, flat, with notes, 0 otherwise, and a sixth: with carry,
# 1 when the other entry was put on the list, else 0), else {0, status, audit head, reason}
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
if spec.guard_head and ARGV[spec.guard_head[1]] ~= cur[2] and spec.guard_head[2] ~= cur[2] then
  return {0, cur[1], cur[2], 'head'}
end
if spec.guard_field then
  local v = redis.call('HGET', xkey, spec.guard_field[1])
  if not v or string.find(v, spec.guard_field[2], 1, true) == nil then
    return {0, cur[1], cur[2], 'field'}
  end
end
if spec.guard_waiting then
  local wp = redis.call('HGET', xkey, 'wp')
  local ok = wp == spec.guard_waiting[1]
  if not wp then  -- waiting since before wp was written: its w is JSON text
    local v = redis.call('HGET', xkey, 'w')
    ok = v and string.find(v, spec.guard_waiting[2], 1, true) ~= nil
  end
  if not ok then return {0, cur[1], cur[2], 'field'} end
end
if spec.guard_lease then
  if redis.call('GET', lkey) ~= spec.guard_lease then return {0, cur[1], cur[2], 'lease'} end
end
if spec.claim and redis.call('EXISTS', lkey) == 1 then return {0, cur[1], cur[2], 'lease'} end
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
if spec.setv then
  for k, i in pairs(spec.setv) do redis.call('HSET', xkey, k, ARGV[i]) end
end
if spec.del and #spec.del > 0 then redis.call('HDEL', xkey, unpack(spec.del)) end
if spec.status and spec.status ~= cur[1] then
  local status_index = {}
  for i = 4, 3 + spec.nstatus do status_index[ARGV[i]] = KEYS[i + 2] end
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
if spec.lrem then
  for _, l in ipairs(spec.lrem) do redis.call('LREM', KEYS[l[1]], 1, ARGV[l[2]]) end
end
local carried = 0
if spec.carry then
  local c = spec.carry
  redis.call('LREM', KEYS[c[1]], 1, ARGV[c[2]])
  if redis.call('LLEN', KEYS[c[4]]) == 0 then
    redis.call('RPUSH', KEYS[c[1]], ARGV[c[3]])
    carried = 1
  end
end
local head = cur[2]
if spec.events then
  for i = spec.events[1], spec.events[2] do redis.call('RPUSH', akey, ARGV[i]) end
  head = ARGV[spec.head]
  redis.call('HSET', xkey, 'ah', head)
end
if spec.guard_lease then
  if spec.release then redis.call('DEL', lkey)
  elseif spec.lease_ttl_ms then redis.call('PEXPIRE', lkey, spec.lease_ttl_ms) end
end
if spec.claim and spec.claim[2] > 0 then
  redis.call('SET', lkey, spec.claim[1], 'PX', spec.claim[2])
end
if spec.notes then  -- the annotations as this commit leaves them: a plug-in's rewrite reads them
  local notes, all = {}, redis.call('HGETALL', xkey)
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, 2) == 'n:' then
      table.insert(notes, all[i]); table.insert(notes, all[i + 1])
    end
  end
  return {1, spec.status or cur[1], head, 'ok', notes, carried}
end
if spec.carry then return {1, spec.status or cur[1], head, 'ok', 0, carried} end
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

# ADD_WORDS: add words to a space-separated annotation of an existing execution, each once,
# writing it (empty) if there are none (Store.add_words). KEYS[1] the execution hash;
# ARGV[1] the field, ARGV[2 ..] the words (none containing a space). Returns 1 when the
# execution exists (the words are there now), 0 when it does not (nothing written).
ADD_WORDS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local held = redis.call('HGET', KEYS[1], ARGV[1]) or ''
local seen = {}
for word in string.gmatch(held, '[^ ]+') do seen[word] = true end
local words = held
for i = 2, #ARGV do
  if not seen[ARGV[i]] then
    seen[ARGV[i]] = true
    if words == '' then words = ARGV[i] else words = words .. ' ' .. ARGV[i] end
  end
end
if words ~= held or redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  redis.call('HSET', KEYS[1], ARGV[1], words)
end
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

# DROP_WORDS: a closing review's index entries and note, in one step (Store.drop_words):
# take ARGV[2] out of the sorted-set indexes KEYS[3 ..] where its score is still ARGV[3] (as
# REMOVE_INSTANCE), delete field ARGV[1] of the execution hash KEYS[1], and, when ARGV[4] is
# '1', read and delete the set KEYS[2] (where an earlier version kept the note; KEYS[1]
# again otherwise). Returns {how many index entries were removed, the set's members}.
# Guarded (sent with a commit, Store.commit's ``alongside``): when ARGV[5] is a field, it does
# nothing unless that field of KEYS[1] holds ARGV[6] (the commit applied) and field ARGV[1]
# still holds ARGV[8] (absent when ARGV[7] is '0': the note as the words were read), and
# then returns {-1, {}}.
DROP_WORDS = """
if ARGV[5] and ARGV[5] ~= '' then
  local at = redis.call('HMGET', KEYS[1], ARGV[5], ARGV[1])
  if at[1] ~= ARGV[6] then return {-1, {}} end
  if ARGV[7] == '1' then
    if at[2] ~= ARGV[8] then return {-1, {}} end
  elseif at[2] then return {-1, {}} end
end
local removed = 0
for i = 3, #KEYS do
  local score = redis.call('ZSCORE', KEYS[i], ARGV[2])
  if score and tonumber(score) == tonumber(ARGV[3]) then
    removed = removed + redis.call('ZREM', KEYS[i], ARGV[2])
  end
end
redis.call('HDEL', KEYS[1], ARGV[1])
local legacy = {}
if ARGV[4] == '1' then
  legacy = redis.call('SMEMBERS', KEYS[2])
  redis.call('DEL', KEYS[2])
end
return {removed, legacy}
"""

# REVIEW_PAGE: a page of an index and the review fields of its executions, in one command
# (Store.review_rows). KEYS[1] the index; KEYS[2 ..] the execution hashes the caller expects
# on the page; ARGV[1], ARGV[2] the page's first and last rank; ARGV[3] the execution hashes'
# key prefix; ARGV[4 ..] the fields. Returns {the page's members, the index's size, each
# given hash's fields (HMGET), then a list of the fields of each member not given, in page
# order}: a page read for the first time (nothing expected) is read whole all the same. The
# hashes of those members are named here, not in KEYS, as a click's reads are (engine.state.
# inbox): Signoff runs on one Redis, not a cluster.
REVIEW_PAGE = """
local out = {redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[2]), redis.call('ZCARD', KEYS[1])}
local given = {}
for i = 2, #KEYS do
  out[i + 1] = redis.call('HMGET', KEYS[i], unpack(ARGV, 4))
  given[KEYS[i]] = true
end
local others = {}
for _, member in ipairs(out[1]) do
  local key = ARGV[3] .. member
  if not given[key] then table.insert(others, redis.call('HMGET', key, unpack(ARGV, 4))) end
end
table.insert(out, others)
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

# Putting first (Inbox.put(first=True): reviewers' clicks before run segments): an inbox list
# holds first the tasks put first, in the order they were put, then the others; its "first"
# count says how many lead it. A task put first goes in before the first of the others
# (LINSERT before the element at that index: found by a scan from the head over the tasks
# put first only), and the count goes up; a drain taking the head counts it down, and it is
# deleted when the list empties (so a count gone wrong mends itself then); a dead drain's
# tasks, put back at the head, count as put first. Should an element before the index equal
# the one there (a task put back by the sweep that another copy of waits further on), a task
# put first lands before it: a task ahead of its turn, nothing lost. Tasks moved back from
# the "later" set go to the tail. As Lua functions for the scripts below:
# put(l, h, a, b): tasks ARGV[a .. b] into the list KEYS[l], at its tail (h = 0) or first,
# KEYS[h] being its "first" count; take(l, t, h): the head of KEYS[l] moved to the tail of
# KEYS[t] and returned (nil when empty), the count KEYS[h] kept. A task that names what it
# reads first (its "p": [[op, key], ...], op h: HGETALL, l: LRANGE 0 -1, s: GET; Task.reads)
# is returned as {the task, those replies in order}: read in the step that takes it (a
# click's run, trail and clicker's cached name), with no round trip of its own.
_PUT_TAKE = """
local function put(l, h, a, b)
  if h == 0 then
    redis.call('RPUSH', KEYS[l], unpack(ARGV, a, b))
    return
  end
  local len = redis.call('LLEN', KEYS[l])
  local n = math.min(tonumber(redis.call('GET', KEYS[h]) or '0'), len)
  if n >= len then
    redis.call('RPUSH', KEYS[l], unpack(ARGV, a, b))
  else
    local pivot = redis.call('LINDEX', KEYS[l], n)
    for i = a, b do redis.call('LINSERT', KEYS[l], 'BEFORE', pivot, ARGV[i]) end
  end
  redis.call('SET', KEYS[h], n + b - a + 1)
end
local function take(l, t, h)
  local task = redis.call('LMOVE', KEYS[l], KEYS[t], 'LEFT', 'RIGHT')
  if redis.call('LLEN', KEYS[l]) == 0 then
    redis.call('DEL', KEYS[h])
  elseif task and tonumber(redis.call('GET', KEYS[h]) or '0') > 0 then
    redis.call('DECR', KEYS[h])
  end
  if task and string.find(task, '"p":[', 1, true) then
    local ok, data = pcall(cjson.decode, task)
    if ok and type(data) == 'table' and type(data.p) == 'table' then
      local read = {}
      for i, r in ipairs(data.p) do  -- anything malformed reads nothing (Task.decode refuses it)
        read[i] = false
        if type(r) == 'table' and type(r[2]) == 'string' then
          if r[1] == 'h' then read[i] = redis.call('HGETALL', r[2])
          elseif r[1] == 'l' then read[i] = redis.call('LRANGE', r[2], 0, -1)
          elseif r[1] == 's' then read[i] = redis.call('GET', r[2]) end
        end
      end
      return {task, read}
    end
  end
  return task
end
"""

# INBOX_PUT: append tasks to an inbox and claim its "drain queued" flag (Inbox.put,
# AsyncInbox). KEYS[1] the inbox list, KEYS[2] its drain flag, KEYS[3] the set of inboxes,
# KEYS[4] (when the tasks go first) the inbox's "first" count; ARGV[1] the flag's lifetime
# (ms), ARGV[2] the queue name, ARGV[3 ..] the tasks (JSON). Returns 1 when the flag was
# free: the caller must enqueue a drain; 0 when one is queued.
INBOX_PUT = _PUT_TAKE + """
if KEYS[4] then put(1, 4, 3, #ARGV) else put(1, 0, 3, #ARGV) end
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
# KEYS[6] the drain job's hash, KEYS[7] (when the tasks go first) the inbox's "first"
# count; ARGV[1] the flag's lifetime (ms), ARGV[2] the queue name,
# ARGV[3] the RQ queue's key (its member in KEYS[5]), ARGV[4] the drain job's id, ARGV[5]
# n, the number of items that follow for the job's hash, ARGV[6 .. 5+n] its fields and
# values (written again at each ring: a job RQ deleted or marked failed is whole again;
# n = 0: the hash is left as it is, and must exist), ARGV[6+n ..] the tasks (JSON; none to
# only queue a drain). Returns 1 when a drain was queued, 0 when one was queued already,
# -1 when n = 0 and the job's hash is missing: the flag is claimed and the tasks are in,
# but no drain is queued: the caller queues it, its hash written (Inbox._ring).
INBOX_RING = _PUT_TAKE + """
local n = tonumber(ARGV[5])
if #ARGV > 5 + n then
  if KEYS[7] then put(1, 7, 6 + n, #ARGV) else put(1, 0, 6 + n, #ARGV) end
  redis.call('SADD', KEYS[3], ARGV[2])
end
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then return 0 end
if n > 0 then
  redis.call('HSET', KEYS[6], unpack(ARGV, 6, 5 + n))
elseif redis.call('EXISTS', KEYS[6]) == 0 then
  return -1
end
redis.call('RPUSH', KEYS[4], ARGV[4])
redis.call('SADD', KEYS[5], ARGV[3])
return 1
"""

# NEXT_DRAIN: after a drain, the drain job a worker may run next without going back to
# RQ's loop (SignoffWorker): the first of its queues, in its order, that has a job waiting,
# if that job is the queue's drain job; it is taken off the queue. KEYS: the worker's RQ
# queue lists, in the order it serves them; ARGV: each queue's drain job id, in the same
# order. Returns the queue's position (1 ..), or 0 when the first job waiting is another
# (RQ's loop runs it) or no queue has one. INBOX_START and INBOX_NEXT do the same, and
# begin that drain too, as the drain they run ends, when given the worker's queues (the
# "chain"): ``_CHAIN`` below.
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

# The chain, as a Lua function for the scripts below (after _PUT_TAKE): as a drain ends with
# its inbox empty, find the drain its worker runs next, and begin it. KEYS[k0] the next
# drain's heartbeat, KEYS[k0+1] its taking list, then for each of the worker's queues in
# the order it serves them five keys: its RQ list, its inbox's drain flag, takers, list and
# "first" count; ``alive`` the heartbeat's lifetime (ms), ARGV[a0] the next drain's name,
# ARGV[a0+1 ..] each queue's drain job id. When the first job waiting on those queues is a
# queue's drain job, it is taken off the queue and that drain begins as INBOX_START begins
# one (flag given up, heartbeat, takers, the first task taken), except that tasks due again
# from its "later" set are left to the drain job queued for when they are due; should its
# inbox be empty (another worker drained it meanwhile), the look goes on. Returns {the
# queue's position (1 ..), its first task} when a drain began, {0} when no queue has a job,
# {-1} when the first job waiting is another (RQ's loop runs it).
# move_due(later, inbox, now, limit): the tasks of the "later" set KEYS[later] due by
# ``now`` (ms), at most ``limit``, soonest first, moved to the tail of the list
# KEYS[inbox] without their tags; returns how many.
_MOVE_DUE = """
local function move_due(later, inbox, now, limit)
  local due = redis.call('ZRANGEBYSCORE', KEYS[later], '-inf', now, 'LIMIT', 0, tonumber(limit))
  for _, member in ipairs(due) do
    local bar = string.find(member, '|', 1, true)
    redis.call('RPUSH', KEYS[inbox], string.sub(member, bar + 1))
    redis.call('ZREM', KEYS[later], member)
  end
  return #due
end
"""

_CHAIN = """
local function chain(k0, alive, a0)
  local n = (#KEYS - k0 - 1) / 5
  local i = 1
  while i <= n do
    local k = k0 + 2 + (i - 1) * 5
    local head = redis.call('LINDEX', KEYS[k], 0)
    if not head then
      i = i + 1
    elseif head ~= ARGV[a0 + i] then
      return {-1}
    else
      redis.call('LPOP', KEYS[k])
      redis.call('DEL', KEYS[k + 1])
      local task = take(k + 3, k0 + 1, k + 4)
      if task then
        redis.call('SET', KEYS[k0], '1', 'PX', alive)
        redis.call('SADD', KEYS[k + 2], ARGV[a0])
        return {i, task}
      end
    end
  end
  return {0}
end
"""

# INBOX_START: a drain begins (Inbox.drain): give up the "drain queued" flag (from now on
# a new task queues another drain), start the drain's heartbeat, add it to the inbox's
# takers, move the tasks of the "later" set that have come due to the tail of the inbox (as
# INBOX_DUE), and take the first task (as INBOX_NEXT). KEYS[1] the drain flag, KEYS[2] the
# drain's heartbeat, KEYS[3] the inbox's takers, KEYS[4] the inbox's "later" set, KEYS[5]
# the inbox list, KEYS[6] the drain's taking list, KEYS[7] the inbox's "first" count,
# KEYS[8 .. 7+Y] the RQ queues the worker serves first, KEYS[8+Y ..] the chain's keys (see
# _CHAIN; none: no chain); ARGV[1] the heartbeat's lifetime (ms), ARGV[2] the drain's name,
# ARGV[3] now (ms since the epoch), ARGV[4] at most how many to move, ARGV[5] '1' to take
# the first task, ARGV[6] Y, ARGV[7 ..] the chain's arguments from the next drain's name on.
# Returns {how many tasks were moved, the first task (moved to the taking list), or 0 when
# the inbox is empty (the drain has ended: heartbeat deleted, out of the takers), -1 when a
# queue in KEYS[8 .. 7+Y] has jobs waiting, -2 when not asked to take one}, and with a
# chain, when the inbox was empty, what _CHAIN returned, item by item.
INBOX_START = _PUT_TAKE + _CHAIN + _MOVE_DUE + """
local y = tonumber(ARGV[6])
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
redis.call('SADD', KEYS[3], ARGV[2])
local due = move_due(4, 5, ARGV[3], ARGV[4])
if ARGV[5] ~= '1' then return {due, -2} end
for i = 8, 7 + y do
  if redis.call('LLEN', KEYS[i]) > 0 then return {due, -1} end
end
local task = take(5, 6, 7)
if not task then
  redis.call('DEL', KEYS[2])
  redis.call('SREM', KEYS[3], ARGV[2])
  if #KEYS > 7 + y then
    local found = chain(8 + y, ARGV[1], 7)
    return {due, 0, found[1], found[2]}
  end
  return {due, 0}
end
return {due, task}
"""

# INBOX_NEXT: acknowledge the previous task (if any), keep the heartbeat and the drain's
# place among the takers (a sweep drops a drain whose heartbeat lapsed during one long
# task), take the next task (Inbox.drain). KEYS[1] the inbox list, KEYS[2] the drain's
# taking list, KEYS[3] its heartbeat, KEYS[4] the inbox's takers, KEYS[5] the inbox's
# "first" count, KEYS[6 .. 5+Y] the RQ queues the worker serves first, KEYS[6+Y ..] the
# chain's keys (see _CHAIN; none: no chain); ARGV[1] the task just finished ('' for none),
# ARGV[2] the heartbeat's lifetime (ms), ARGV[3] the drain's name, ARGV[4] '1' to end the
# drain when the inbox is empty (its heartbeat deleted, out of the takers: nothing left
# behind), ARGV[5] Y, ARGV[6 ..] the chain's arguments from the next drain's name on.
# Returns the next task (moved to the taking list), nil when the inbox is empty (with a
# chain, {0, then what _CHAIN returned, item by item}: the drain ended), or -1 when a queue
# in KEYS[6 .. 5+Y] has jobs waiting: the drain yields to them.
INBOX_NEXT = _PUT_TAKE + _CHAIN + """
local y = tonumber(ARGV[5])
if ARGV[1] ~= '' then redis.call('LREM', KEYS[2], 1, ARGV[1]) end
redis.call('SET', KEYS[3], '1', 'PX', ARGV[2])
redis.call('SADD', KEYS[4], ARGV[3])
for i = 6, 5 + y do
  if redis.call('LLEN', KEYS[i]) > 0 then return -1 end
end
local task = take(1, 2, 5)
if not task and ARGV[4] == '1' then
  redis.call('DEL', KEYS[3])
  redis.call('SREM', KEYS[4], ARGV[3])
  if #KEYS > 5 + y then
    local found = chain(6 + y, ARGV[2], 6)
    return {0, found[1], found[2]}
  end
end
return task
"""

# INBOX_RECOVER: put a dead drain's tasks back at the head of the inbox, oldest first, and
# forget the drain (Inbox.recover); they count as put first. KEYS[1] the inbox list, KEYS[2]
# the drain's taking list, KEYS[3] its heartbeat, KEYS[4] the inbox's takers, KEYS[5] the
# inbox's "first" count; ARGV[1] the drain's name.
# Returns how many tasks were put back, or -1 when the drain's heartbeat is alive
# (nothing touched).
INBOX_RECOVER = """
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local n = 0
while redis.call('LMOVE', KEYS[2], KEYS[1], 'RIGHT', 'LEFT') do n = n + 1 end
if n > 0 then redis.call('INCRBY', KEYS[5], n) end
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
INBOX_DUE = _MOVE_DUE + """
return move_due(1, 2, ARGV[1], ARGV[2])
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
