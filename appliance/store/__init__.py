"""The store process: the one writer of the appliance's SQLite memory file."""
