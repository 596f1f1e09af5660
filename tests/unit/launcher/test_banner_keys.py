"""The ready banner's examples say when a key is needed (and never print one)."""

from services.common.config import parse_models_config
from services.launcher.banner import ready_banner

CONFIG = parse_models_config({"models": [{"name": "m", "local_path": "/x"}]})


def test_without_keys_any_string_does():
    banner = ready_banner(CONFIG, "127.0.0.1", 8000, ui_server=False)
    assert "(api_key: any string)" in banner and "Authorization" not in banner


def test_with_keys_the_examples_send_one():
    banner = ready_banner(CONFIG, "127.0.0.1", 8000, ui_server=False, keys_required=True)
    assert "(api_key: one of the configured keys)" in banner
    assert "Authorization: Bearer $PROXYVISION_API_KEY" in banner and 'os.environ["PROXYVISION_API_KEY"]' in banner
