"""The worker side, on RQ: job bodies, the RQ scheduler behind the timer seam, the
worker class and its maintenance sweep, scheduled triggers, and the per-process
runtime that wires store, engine and runner together. The only package that
imports RQ's worker machinery; nothing in the engine imports it but the CLI.
"""
