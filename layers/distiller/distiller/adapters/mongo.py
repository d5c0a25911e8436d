"""Connecting to the real database from a function: the URI from Secrets Manager, one pooled client per
container. (The relay CLI and ops tooling open their own client from a `--mongo-uri`.)"""

from __future__ import annotations

from aws_lambda_powertools.utilities import parameters
from pymongo import MongoClient
from pymongo.database import Database

from distiller.settings import MongoSettings

#: Seconds the connection-string secret is cached by powertools Parameters.
SECRET_MAX_AGE = 300


def connect_database(settings: MongoSettings) -> Database:
    """The database named in settings, its URI read from Secrets Manager."""
    uri = parameters.get_secret(settings.uri_secret, max_age=SECRET_MAX_AGE)
    client: MongoClient = MongoClient(
        str(uri), tz_aware=True, appname="trigger-distiller", serverSelectionTimeoutMS=5000
    )
    return client[settings.database]
