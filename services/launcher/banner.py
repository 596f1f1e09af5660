"""The text printed once the stack is ready: where to point clients, and a request to paste."""

from __future__ import annotations

import json

from services.common.config import ModelsConfig
from services.common.hf_models import stand_in_for

from .probes import connect_host


def base_url(host: str, port: int) -> str:
    """The gateway's URL as a client on this machine writes it."""
    return f"http://{connect_host(host)}:{port}"


def ready_banner(
    config: ModelsConfig,
    host: str,
    port: int,
    *,
    ui_server: bool,
    engine_metrics: list[tuple[str, int]] = (),
    vision_error: str | None = None,
    keys_required: bool = False,
) -> str:
    """The ready banner (stdout, so it stands apart from the log lines on stderr). `vision_error`: why
    the vision model failed to load (text is served; image requests get "Vision model unavailable").
    `keys_required`: API keys are configured, so the examples say a key is needed (never which)."""
    base = base_url(host, port)
    default = config.default_model_name
    vision = config.vision_model.name if config.vision_model else "none (text only)"
    if vision_error is not None:
        vision = f"UNAVAILABLE: {vision} failed to load ({vision_error}); text only"
    body = json.dumps(
        {"model": default, "messages": [{"role": "user", "content": "Hello, how are you?"}], "max_tokens": 100}
    )
    lines = [
        "",
        "ProxyVision is ready.",
        f"  OpenAI base_url : {base}/v1   (api_key: {'one of the configured keys' if keys_required else 'any string'})",
        f"  models          : {', '.join(m.name for m in config.text_models)} (default: {default})",
        f"  vision          : {vision}",
    ]
    weights = _weights_line(config)
    if weights:
        lines.append(f"  weights         : {weights}")
    if ui_server:
        lines.append(f"  web UI          : {base}/")
    lines.append(
        f"  metrics         : {base}/metrics"
        + "".join(
            f", {name} http://{connect_host('127.0.0.1')}:{metrics_port}/metrics"
            for name, metrics_port in engine_metrics
        )
    )
    lines += [
        '  python          : openai.OpenAI(base_url="'
        + base
        + '/v1", api_key='
        + ('os.environ["PROXYVISION_API_KEY"]' if keys_required else '"not-needed"')
        + ")",
        "  try:",
        f"    curl -s {base}/v1/chat/completions -H 'Content-Type: application/json'"
        + (' -H "Authorization: Bearer $PROXYVISION_API_KEY"' if keys_required else "")
        + " \\",
        f"      -d '{body}'",
        "  Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)


def _weights_line(config: ModelsConfig) -> str:
    """Which models are real and which are offline stand-ins (whose answers are gibberish by design);
    '' when none is a stand-in (then every model is what its entry names)."""
    stand_ins = [m.name for m in config.models if stand_in_for(m.source)]
    if not stand_ins:
        return ""
    real = [m.name for m in config.models if m.name not in stand_ins]
    said = f"{', '.join(stand_ins)}: tiny random-weight stand-ins (gibberish by design)"
    return f"{', '.join(real)}: real weights; {said}" if real else said
