"""Prefect tasks wrapping stages. Importing this package sets Prefect's environment first (see tasks/env.py)."""

from tasks import env as _env

_env.configure()
