"""The pure pipeline: change events in, partner deliveries out. Imports no AWS, no Mongo driver, no HTTP."""
