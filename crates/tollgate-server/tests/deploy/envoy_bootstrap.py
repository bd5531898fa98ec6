"""Checks an Envoy bootstrap YAML against Envoy's API (the protobuf messages of envoy-data-plane).

    envoy_bootstrap.py ENVOY.yaml

Every field must exist in its message (unknown fields are refused), every `typed_config` is
decoded as the message its `@type` names, and every cluster a route or gRPC service names must
be defined. Prints the HTTP filters of each listener; exits 1 on the first problem.
"""

import importlib
import re
import sys

import yaml

TYPE_URL = re.compile(r"type\.googleapis\.com/(envoy\.[a-z0-9_.]+)\.[A-Z]\w*")


def main():
    path = sys.argv[1]
    with open(path, encoding="utf-8") as f:
        text = f.read()
    # Register the message types the file names, so the Any fields decode.
    for package in sorted(set(TYPE_URL.findall(text))):
        importlib.import_module(f"envoy_data_plane.{package}")
    from envoy_data_plane.envoy.config.bootstrap.v3 import Bootstrap

    bootstrap = Bootstrap.from_dict(yaml.safe_load(text))
    clusters = {cluster.name for cluster in bootstrap.static_resources.clusters}
    referenced = set(re.findall(r"\b(?:cluster|cluster_name):\s*(\w+)", text))
    missing = referenced - clusters
    if missing:
        print(f"{path}: clusters referenced but not defined: {sorted(missing)}")
        return 1
    for listener in bootstrap.static_resources.listeners:
        for chain in listener.filter_chains:
            for network_filter in chain.filters:
                manager = network_filter.typed_config.unpack()
                filters = [f"{f.name}:{type(f.typed_config.unpack()).__name__}" for f in manager.http_filters]
                print(f"{listener.name}: {' '.join(filters)}")
                for http_filter in manager.http_filters:
                    config = http_filter.typed_config.unpack()
                    if type(config).__name__ == "RateLimit":
                        service = config.rate_limit_service.grpc_service.envoy_grpc.cluster_name
                        print(f"ratelimit: domain={config.domain} cluster={service}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
