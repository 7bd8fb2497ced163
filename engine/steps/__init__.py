"""Built-in step types; importing this package registers them."""

from engine.steps import console, data, flow, http, human, wait  # noqa: F401
