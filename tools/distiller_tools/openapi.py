"""`python -m distiller_tools.openapi > docs/openapi.json`: the OpenAPI document the routes generate."""

import json

from distiller.api.routes import openapi_document

if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(openapi_document(), indent=2, sort_keys=True))
