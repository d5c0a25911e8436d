"""The change-stream relay and replay: a pymongo change stream onto the ingest queue."""
