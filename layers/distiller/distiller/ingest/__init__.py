"""Getting change events in: source shapes (Atlas via EventBridge, DocumentDB, the relay) and the Distiller's batch."""
