"""Built-in step types; importing this package registers them."""

from engine.steps import human  # noqa: F401
