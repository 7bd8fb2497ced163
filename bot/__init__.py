"""The Slack side of Signoff: render reviews as Block Kit, read answers back, talk to Slack.

``texts``, ``mrkdwn``, ``blocks`` and ``forms`` are pure (no network, no Redis):
they turn engine records into Block Kit JSON and modal submissions into answers.
"""
