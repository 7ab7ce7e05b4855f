"""The ``files`` target: directories and files of the host, with a per-file content manifest."""
