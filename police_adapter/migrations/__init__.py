"""Alembic migrations of the population database adapter."""
