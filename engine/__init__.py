"""Signoff's workflow engine: workflows, steps, durable executions, timers, audit and API.

The engine never imports ``bot``, ``slack_bolt`` or ``slack_sdk``: it announces
reviews through :class:`engine.notify.Notifier`, which the bot implements.
"""
