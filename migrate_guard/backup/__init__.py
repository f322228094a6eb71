"""Backups: engines per dialect, the repository format, crypto, retention."""
