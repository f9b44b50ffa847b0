"""CLI sub-commands: each module exposes ``register(app)`` and is mounted by :mod:`harness.cli`."""
