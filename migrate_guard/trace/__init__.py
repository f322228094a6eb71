"""trace: the locks, rewrites and failures of pending revisions, measured on a scratch copy of the server."""
