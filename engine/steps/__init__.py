"""Built-in step types; importing this package registers them."""

from engine.steps import (  # noqa: F401
    agent_builder,
    ai,
    arrays,
    cases,
    composition,
    console,
    data,
    elasticsearch,
    flow,
    http,
    human,
    kibana,
    loops,
    parallel,
    regex,
    wait,
)
