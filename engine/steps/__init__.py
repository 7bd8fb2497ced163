"""Built-in step types; importing this package registers them."""

from engine.steps import (  # noqa: F401
    arrays,
    composition,
    console,
    data,
    elasticsearch,
    flow,
    http,
    human,
    loops,
    parallel,
    regex,
    wait,
)
