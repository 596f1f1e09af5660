"""TLS on the gRPC hop between the gateway and the engines: settings resolved once, credentials built here.

Off unless models.yaml has a `tls:` section (or a PROXYVISION_TLS_* variable / --tls-* flag sets a key).
Both sides read the same section and take what concerns them:

* an engine serves with `server_cert` + `server_key`; with `require_client_cert` it also demands a client
  certificate and verifies it against `ca` (mTLS);
* the gateway verifies the engines against `ca` (unset: gRPC's bundled public roots), presents
  `client_cert` + `client_key` when given, and expects the engines' certificates to name the host it dials
  (or `server_name`, for IP targets and tests).

Files are read when credentials are built, at start-up, so a missing or unreadable file is a ConfigError
that names the key. The engine server, the gateway's channels, the launcher's probes and the test engines
all build their credentials here, so they cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import grpc

from .config import ConfigError, TlsSettings
from .env import first_set

# Settings that a flag or a variable may set: key -> (environment variable, argparse dest).
TLS_OVERRIDES: dict[str, tuple[str, str]] = {
    key: (f"PROXYVISION_TLS_{key.upper()}", f"tls_{key}") for key in TlsSettings.model_fields
}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}
# gRPC's C core words a failed handshake as "Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL:
# error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate".
_OPENSSL_REASON = re.compile(r"OPENSSL_internal:([A-Z_]+)(?::\s*([^:]+))?")


def add_tls_arguments(parser, *, side: str) -> None:
    """The --tls-* flags of one side ('engine' or 'gateway'): only the keys that side reads."""
    group = parser.add_argument_group("TLS on the gRPC hop (overrides models.yaml's tls: section)")

    def flag(key: str, help_text: str, **kwargs) -> None:
        env, dest = TLS_OVERRIDES[key]
        options = {"metavar": "PATH", **kwargs}
        group.add_argument(f"--tls-{key.replace('_', '-')}", dest=dest, help=f"{help_text} (env {env})", **options)

    flag("ca", "PEM CA bundle: verifies engines (gateway) / client certificates (engine, with mTLS)")
    if side == "engine":
        flag("server_cert", "PEM certificate chain the engine serves")
        flag("server_key", "PEM private key of --tls-server-cert")
        mtls = "mTLS: refuse clients without a certificate signed by --tls-ca"
        flag("require_client_cert", mtls, action="store_const", const=True, metavar=None)
    else:
        flag("client_cert", "PEM certificate the gateway presents to the engines (mTLS)")
        flag("client_key", "PEM private key of --tls-client-cert")
        flag("server_name", "name the engines' certificates must carry, instead of the dialled host", metavar="NAME")


def resolve_tls(
    file_value: TlsSettings | None, args=None, environ: Mapping[str, str] | None = None
) -> TlsSettings | None:
    """CLI > env > models.yaml for each tls key; None (plaintext) when no layer sets any.

    Paths from the file are already absolute (relative to the yaml); from a flag or variable they are
    taken as given (relative to the working directory)."""
    values = {} if file_value is None else file_value.model_dump()
    overridden = False
    for key, (env, dest) in TLS_OVERRIDES.items():
        value = first_set(getattr(args, dest, None), env, environ=environ)
        if value is None:
            continue
        values[key] = _parse_bool(env, value) if key == "require_client_cert" else value
        overridden = overridden or values[key] is not False  # "require_client_cert: false" alone turns nothing on
    if file_value is None and not overridden:
        return None
    try:
        return TlsSettings.model_validate(values)
    except ValueError as exc:
        raise ConfigError(_first_error(exc)) from None


def _parse_bool(env: str, value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise ConfigError(f"{env}: expected true or false, got {value!r}")


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    return "; ".join(f"tls: {e['msg'].removeprefix('Value error, ')}" for e in errors())


def _read(tls: TlsSettings, key: str) -> bytes:
    path = getattr(tls, key)
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"tls.{key}: cannot read {path}: {exc.strerror or exc}") from None


def server_credentials(tls: TlsSettings) -> grpc.ServerCredentials:
    """An engine's credentials: its certificate and key, and with `require_client_cert` the CA it checks
    clients against. ConfigError when the engine's part of the section is missing or unreadable."""
    if not tls.server_cert:
        raise ConfigError(
            "tls.server_cert: an engine needs its certificate and key (tls.server_cert, tls.server_key) when TLS is on"
        )
    pair = [(_read(tls, "server_key"), _read(tls, "server_cert"))]
    if tls.require_client_cert:
        return grpc.ssl_server_credentials(pair, root_certificates=_read(tls, "ca"), require_client_auth=True)
    return grpc.ssl_server_credentials(pair)


def channel_credentials(tls: TlsSettings) -> grpc.ChannelCredentials:
    """The gateway's credentials: the CA it verifies engines with and, for mTLS, its own certificate."""
    root = _read(tls, "ca") if tls.ca else None
    if tls.client_cert:
        return grpc.ssl_channel_credentials(
            root_certificates=root, private_key=_read(tls, "client_key"), certificate_chain=_read(tls, "client_cert")
        )
    return grpc.ssl_channel_credentials(root_certificates=root)


def channel_options(tls: TlsSettings | None) -> list[tuple[str, str]]:
    """Channel options TLS adds: the expected server name when it is not the dialled host."""
    if tls is None or not tls.server_name:
        return []
    return [("grpc.ssl_target_name_override", tls.server_name)]


def bind_port(server: grpc.aio.Server, address: str, tls: TlsSettings | None) -> int:
    """Bind `address` with TLS when it is on, plaintext otherwise; the port bound (0 on failure, as gRPC)."""
    if tls is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, server_credentials(tls))


def open_sync_channel(target: str, tls: TlsSettings | None, options: list | None = None) -> grpc.Channel:
    """A blocking channel to an engine (the launcher's probes), secured like the gateway's."""
    options = [*(options or []), *channel_options(tls)]
    if tls is None:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, channel_credentials(tls), options=options)


def open_aio_channel(target: str, tls: TlsSettings | None, options: list | None = None) -> grpc.aio.Channel:
    """An asyncio channel to an engine (the gateway), secured when TLS is on."""
    options = [*(options or []), *channel_options(tls)]
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, channel_credentials(tls), options=options)


def server_transport(tls: TlsSettings | None) -> str:
    """How an engine serves, for its start-up log line."""
    if tls is None:
        return "plaintext"
    return "mTLS (client certificates required)" if tls.require_client_cert else "TLS"


def client_transport(tls: TlsSettings | None) -> str:
    """How the gateway reaches the engines, for its start-up log line."""
    if tls is None:
        return "plaintext"
    return "mTLS (presenting a client certificate)" if tls.client_cert else "TLS"


def handshake_failure(details: str | None) -> str | None:
    """What went wrong with TLS, in a few words, when a failed call's details say so, else None:
    'TLS handshake failed: CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate' (an untrusted
    certificate), or the hostname check failing (the certificate names another host: see tls.server_name)."""
    if "hostname verification check failed" in (details or "").lower():
        return "TLS handshake failed: the engine's certificate does not name the host dialled (see tls.server_name)"
    if "handshake failed" not in (details or "").lower():
        return None
    match = _OPENSSL_REASON.search(details or "")
    if match is None:
        return "TLS handshake failed"
    reason, words = match.group(1), (match.group(2) or "").strip()
    return f"TLS handshake failed: {reason}: {words}" if words and words != "OK" else f"TLS handshake failed: {reason}"
