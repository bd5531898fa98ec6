"""Validates real HTTP responses against docs/openapi.yaml.

    openapi_responses.py SPEC EXCHANGES.json

EXCHANGES.json is a list of recorded exchanges with a running server: {"method", "path",
"query", "status", "content_type", "headers", "body"}. The document itself is validated first
(openapi-core refuses an invalid one); then each response must match the document's response for
its path, method and status: status code listed, content type, body schema, headers. Prints the
document's paths (`paths: ...`) and one line per exchange; exits 1 with every mismatch listed.
"""

import json
import sys

import jsonschema

from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse


def main():
    spec_path, exchanges_path = sys.argv[1], sys.argv[2]
    openapi = OpenAPI.from_file_path(spec_path)
    documented = sorted(key for key in (openapi.spec / "paths").keys())
    print("paths: " + " ".join(documented))
    with open(exchanges_path, encoding="utf-8") as f:
        exchanges = json.load(f)
    host_url = (openapi.spec / "servers" / 0 / "url").read_value()
    error_schema = (openapi.spec / "components" / "schemas" / "Error").read_value()
    failures = 0
    for exchange in exchanges:
        name = f"{exchange['method']} {exchange['path']} -> {exchange['status']}"
        if exchange["status"] == 405:
            # The method is not an operation of the path: the document describes 405 once.
            try:
                jsonschema.validate(json.loads(exchange["body"]), error_schema)
                assert exchange["headers"].get("allow"), "405 without an Allow header"
            except Exception as error:
                failures += 1
                print(f"mismatch: {name}: {error}")
            else:
                print(f"ok: {name}")
            continue
        request = MockRequest(
            host_url,
            exchange["method"].lower(),
            exchange["path"],
            args=exchange.get("query") or {},
        )
        response = MockResponse(
            exchange["body"].encode("utf-8"),
            status_code=exchange["status"],
            headers=exchange.get("headers") or {},
            content_type=exchange.get("content_type") or "",
        )
        try:
            openapi.validate_response(request, response)
        except Exception as error:  # openapi-core raises one type per kind of mismatch
            failures += 1
            causes = getattr(error, "schema_errors", None) or getattr(error, "__cause__", None)
            print(f"mismatch: {name}: {error!r} {causes or ''} body={exchange['body'][:300]!r}")
        else:
            print(f"ok: {name}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
