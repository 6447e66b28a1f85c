"""Alembic migrations (a package so a non-editable install ships them)."""
