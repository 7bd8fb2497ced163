"""Built-in step types; importing this package registers them."""

from engine.steps import arrays, console, data, flow, http, human, loops, regex, wait  # noqa: F401
