"""`python -m services.common.health_check --models-config F --port P`: exit 0 if the engine on this host
answers grpc.health.v1 SERVING, else 1.

The Kubernetes probe of an engine that serves TLS: the kubelet's native gRPC probe speaks plaintext only.
It dials 127.0.0.1 with the engine's own `tls:` settings (models.yaml, PROXYVISION_TLS_*), verifying the
certificate against `tls.ca` as the name `--server-name` (the engine's Service DNS name, which its
certificate carries anyway). Under mTLS it presents the engine's own certificate, so that certificate must
allow client authentication too (cert-manager: usages [server auth, client auth]).
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .config import ConfigError, load_models_config
from .env import models_config_path
from .tls import open_sync_channel, resolve_tls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.common.health_check", description=__doc__)
    parser.add_argument("--models-config", help="models.yaml (env PROXYVISION_MODELS_CONFIG)")
    parser.add_argument("--port", type=int, required=True, help="the engine's gRPC port")
    parser.add_argument(
        "--server-name", help="name to verify the engine's certificate as (default tls.server_name, else 127.0.0.1)"
    )
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    try:
        tls = resolve_tls(load_models_config(models_config_path(args.models_config)).tls)
    except (ConfigError, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 1
    if tls is not None:
        # The probe is the engine's own client: it verifies as the Service name and, for mTLS, shows the
        # engine's certificate (the gateway's client certificate is not mounted in engine pods).
        update = {"server_name": args.server_name or tls.server_name}
        if tls.require_client_cert:
            update.update(client_cert=tls.server_cert, client_key=tls.server_key)
        tls = tls.model_copy(update=update)
    try:
        with open_sync_channel(f"127.0.0.1:{args.port}", tls) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=args.timeout)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    except grpc.RpcError as exc:
        print(f"unreachable: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(status)
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
