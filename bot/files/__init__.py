"""Files on a message: what kinds are read, within what limits, parsed in a sandbox of worker
processes, fetched only from their platform's hosts."""
