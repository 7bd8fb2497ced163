"""Built-in step types; importing this package registers them."""

from engine.steps import (  # noqa: F401
    ai,
    arrays,
    composition,
    console,
    data,
    flow,
    http,
    human,
    loops,
    parallel,
    regex,
    wait,
)
