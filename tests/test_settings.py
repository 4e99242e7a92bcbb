import json

import pytest

from whisperq.settings import ConfigError, Settings


def test_defaults_without_any_configuration():
    settings = Settings()
    assert settings.model == "tiny.en"
    assert settings.bucket == ""
    with pytest.raises(ConfigError, match="whisperq local up") as raised:
        settings.require_storage()
    assert "WHISPERQ_BUCKET" in str(raised.value)


def test_env_beats_dotenv_beats_config_file(isolated_settings, monkeypatch):
    (isolated_settings / "config.toml").write_text(
        'bucket = "from-toml"\nmodel = "from-toml"\nregion = "eu-west-1"\n'
    )
    (isolated_settings / ".env").write_text(
        "WHISPERQ_BUCKET=from-dotenv\nWHISPERQ_MODEL=from-dotenv\n"
    )
    monkeypatch.setenv("WHISPERQ_BUCKET", "from-env")
    settings = Settings()
    assert settings.bucket == "from-env"
    assert settings.model == "from-dotenv"
    assert settings.region == "eu-west-1"


def test_local_stack_owns_the_connection_while_it_is_up(isolated_settings, monkeypatch):
    monkeypatch.setenv("WHISPERQ_BUCKET", "prod-bucket")
    monkeypatch.setenv("WHISPERQ_MODEL", "base")
    state_dir = isolated_settings / "state"
    state_dir.mkdir()
    connection = {
        "endpoint_url": "http://127.0.0.1:1234",
        "bucket": "whisperq-local",
        "queue_url": "http://127.0.0.1:1234/123456789012/whisperq-local",
        "region": "us-east-1",
    }
    (state_dir / "stack.json").write_text(json.dumps({"settings": connection}))
    settings = Settings()
    assert settings.bucket == "whisperq-local"
    assert settings.endpoint_url == "http://127.0.0.1:1234"
    assert settings.queue_name == "whisperq-local"
    assert settings.model == "base"  # not a connection field: the environment still decides
    assert settings.target == "local stack at http://127.0.0.1:1234"

    (state_dir / "stack.json").unlink()  # local down: back to the configured target
    assert Settings().bucket == "prod-bucket"
    assert Settings().endpoint_url is None


def test_bad_values_name_the_field(monkeypatch):
    monkeypatch.setenv("WHISPERQ_DEVICE", "tpu")
    with pytest.raises(ValueError, match="device"):
        Settings()
