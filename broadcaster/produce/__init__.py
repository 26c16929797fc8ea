"""Producers' ways in besides plain SQL: the Python API and bulk import."""
