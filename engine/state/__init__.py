"""Durable state in Redis: every key name, every Lua script, and every read and write.

Owns the execution records (:mod:`.execution`), the hash-chained audit trail's
format (:mod:`.audit`), key names (:mod:`.keys`), Lua scripts (:mod:`.lua`), the
store that applies atomic changes (:mod:`.store`), the indexes that listings read
(:mod:`.indexes`), several owners' commands sent in one round trip (:mod:`.batch`),
the inboxes that carry small tasks
to workers (:mod:`.inbox`), the slots of concurrency groups (:mod:`.slots`), API
tokens' records and scopes (:mod:`.tokens`) and the private redis-server of tests and
the demo (:mod:`.embedded_redis`). Imports
:mod:`engine.errors` and :mod:`engine.notify` only; the run layer and the worker build
on it.
"""
