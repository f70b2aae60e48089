"""Diagnostics for people deploying the app: ``python -m chat.doctor`` (see __main__.py)."""
