"""The definition layer, pure: what a workflow says, and whether it is valid.

Owns the workflow model (frozen records), loading and checking YAML with
file:line:column problems, the step-type registry, Liquid templates (with the Markdown
escaping of a review's message), KQL conditions, durations, scheduled-trigger times,
the schema reviewers' answers are checked against (patterns in RE2) and the egress
policy of ``http`` steps (rules only; the step connects). Imports nothing of Redis, RQ
or HTTP, and no other engine package: only :mod:`engine.errors`.
"""
