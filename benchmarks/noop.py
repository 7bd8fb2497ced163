"""The job bare-RQ baselines run: it does nothing."""


def noop() -> None:
    return None
