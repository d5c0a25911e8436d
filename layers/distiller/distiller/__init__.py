"""Trigger distiller: MongoDB change events in, PrivateAuto partner webhook deliveries out."""

__version__ = "0.1.0"
