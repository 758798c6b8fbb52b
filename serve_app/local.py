"""Deploying a Serve config from Python, the way ``serve run CONFIG`` does.

Used by the integration and cluster tests and the benchmarks, so all of them run the
very configs users run. Ray 2.60 offers this only through its private API (the CLI
calls the same two functions), so the dependency lives here, in one place.
"""

import socket

from ray.serve._private import api as serve_private_api
from ray.serve.schema import ServeDeploySchema


def deploy_config(config: dict) -> None:
    """Starts Serve with the config's HTTP options and hands every app to the controller.

    Args:
        config: a whole Serve config (the parsed YAML); Ray must already be connected.
    """
    schema = ServeDeploySchema(**config)
    client = serve_private_api.serve_start(
        http_options=schema.http_options.model_dump(), proxy_location=schema.proxy_location
    )
    client.deploy_apps(schema)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
