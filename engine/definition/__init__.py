"""The definition layer, pure: what a workflow says, and whether it is valid.

Owns the workflow model (frozen records), loading and checking YAML with
file:line:column problems, the step-type registry, Liquid templates, KQL
conditions, durations and scheduled-trigger times. Imports nothing of Redis, RQ or
HTTP, and no other engine package: only :mod:`engine.errors`.
"""
