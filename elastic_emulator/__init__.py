"""Local stand-ins for Kibana and Elasticsearch, reached over real HTTP on loopback.

Tests and ``make demo`` point Signoff's connections (``SIGNOFF_CONNECTORS``) at them, as
``slack_emulator`` stands in for Slack: the real clients speak Elastic's wire format to
them, and they answer with Elastic's response and error shapes, limits and 429s. Each
module's docstring says what it deliberately does not model.
"""
