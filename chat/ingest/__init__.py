"""Ingest: documents -> sections -> chunks -> embeddings -> the local index or Azure AI Search.

``python -m chat.ingest`` runs the command (chat/ingest/cli.py).
"""
