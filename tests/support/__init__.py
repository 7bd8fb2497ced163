"""Factories the tests share: private Redis, workers, and the web process."""
