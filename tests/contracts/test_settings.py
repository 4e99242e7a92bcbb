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


def test_the_ingest_queues_come_from_the_local_stack_while_it_is_up(isolated_settings, monkeypatch):
    """`status` counts the ingest queue and its dead letters: the local stack names both,
    ahead of what a deployed stack's config (WHISPERQ_INGEST_*_URL) says."""
    monkeypatch.setenv("WHISPERQ_INGEST_QUEUE_URL", "https://sqs/1/whisperq-ingest")
    monkeypatch.setenv("WHISPERQ_INGEST_DLQ_URL", "https://sqs/1/whisperq-ingest-dlq")
    assert Settings().ingest_dlq_url == "https://sqs/1/whisperq-ingest-dlq"
    state_dir = isolated_settings / "state"
    state_dir.mkdir()
    local = {
        "ingest_queue_url": "http://127.0.0.1:1234/1/whisperq-local-ingest",
        "ingest_dlq_url": "http://127.0.0.1:1234/1/whisperq-local-ingest-dlq",
    }
    (state_dir / "stack.json").write_text(json.dumps({"settings": local}))
    settings = Settings()
    assert (settings.ingest_queue_url, settings.ingest_dlq_url) == tuple(local.values())


def test_bad_values_name_the_field(monkeypatch):
    monkeypatch.setenv("WHISPERQ_DEVICE", "tpu")
    with pytest.raises(ValueError, match="device"):
        Settings()


# --- config file round trip and invalid values ------------------------------------------

# A value unlike the default for every kind of field Settings has; the test below fails
# when a field of a new kind is added without a sample here.
SAMPLES_BY_ANNOTATION = {
    "str": "s3-bucket-é",
    "str | None": "http://127.0.0.1:5000",
    "int": 7,
    "int | None": 123,
    "float": 2.5,
    "bool": False,
    "SecretStr | None": "sec'ret\"key",
    "list[str]": ["base", "large-v3"],
    "dict[str, dict[str, float]]": {"c6a.xlarge": {"spot": 0.061, "on_demand": 0.153}},
    "dict[str, dict[str, Any]]": {"support": {"channels": "split", "speakers": ["agent", "b"]}},
    "dict[str, Any]": {"language": "en", "formats": ["srt"]},
    "dict[str, str]": {"policy": r"POL-?\d{8}", "member_id": "M[0-9]{6}"},
    "Literal['auto', 'cpu', 'cuda']": "cuda",
    "Literal['auto', 'on', 'off']": "off",
}
NOT_IN_CONFIG_FILE = {"state_dir", "config_file"}  # where the config file itself is


def _annotation(field) -> str:
    import re

    text = str(field.annotation)
    text = re.sub(r"\b(typing|pathlib|pydantic\.types)\.", "", text)
    text = re.sub(r"<class '(\w+)'>", r"\1", text)
    return text.replace("Optional[", "").replace("NoneType", "None")


# settings whose strings have a form of their own
SAMPLES_BY_NAME = {"ingest_batch": "{folder}-{date}"}


def test_every_setting_survives_a_config_file_written_by_from_stack(isolated_settings, monkeypatch):
    """from-stack wrote tables and lists back as strings; every command then failed."""
    from whisperq.stacks.from_stack import write_config

    monkeypatch.delenv("WHISPERQ_WORKER_CONCURRENCY")  # conftest's; the file's must show

    values = {}
    for name, field in Settings.model_fields.items():
        if name in NOT_IN_CONFIG_FILE:
            continue
        kind = _annotation(field)
        assert kind in SAMPLES_BY_ANNOTATION, f"add a sample for {name}: {kind}"
        values[name] = SAMPLES_BY_NAME.get(name, SAMPLES_BY_ANNOTATION[kind])
    config_file = isolated_settings / "config.toml"
    config_file.write_text("# my own notes\nmodel = 'base'\n")
    write_config(config_file, values)
    write_config(config_file, {"bucket": "again"})  # a second run keeps the first's values

    settings = Settings()
    dumped = settings.model_dump()
    for name, value in values.items():
        got = dumped[name]
        if name == "aws_secret_access_key":
            got = got.get_secret_value()
        if name == "bucket":
            value = "again"
        assert got == value, name
    assert "# my own notes" in config_file.read_text()


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("WHISPERQ_BEAM_SIZE", "abc", "valid integer"),
        ("WHISPERQ_DEVICE", "tpu", "'auto', 'cpu' or 'cuda'"),
        ("WHISPERQ_UPLOAD_CONCURRENCY", "0", "greater than or equal to 1"),
        ("WHISPERQ_ALLOWED_MODELS", "base", "cannot be parsed"),
        ("WHISPERQ_INSTANCE_PRICES", "{bad", "cannot be parsed"),
    ],
)
def test_an_invalid_setting_is_one_line_naming_it_and_exit_2(variable, value, says):
    """`WHISPERQ_BEAM_SIZE=abc whisperq status` printed a 55-line traceback."""
    import os
    import subprocess
    import sys

    env = {**os.environ, variable: value, "COLUMNS": "300"}
    done = subprocess.run(
        [sys.executable, "-m", "whisperq", "status"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and variable in lines[0] and says in lines[0]
    assert "Traceback" not in done.stderr


def test_a_config_file_that_is_not_toml_is_named(isolated_settings):
    from whisperq.settings import InvalidSettingError, load_settings

    (isolated_settings / "config.toml").write_text("bucket = \n")
    with pytest.raises(InvalidSettingError, match=r"config\.toml is not valid TOML"):
        load_settings()


@pytest.mark.parametrize("where", ["environment", ".env", "config"])
def test_an_invalid_value_names_the_source_it_came_from(isolated_settings, monkeypatch, where):
    from whisperq.errors import InvalidSettingError
    from whisperq.settings import load_settings

    if where == "environment":
        monkeypatch.setenv("WHISPERQ_BEAM_SIZE", "abc")
        says = "WHISPERQ_BEAM_SIZE (environment)"
    elif where == ".env":
        (isolated_settings / ".env").write_text("WHISPERQ_BEAM_SIZE=abc\n")
        says = f"WHISPERQ_BEAM_SIZE in {(isolated_settings / '.env').resolve()}"
    else:
        (isolated_settings / "config.toml").write_text('beam_size = "abc"\n')
        says = f"beam_size in {isolated_settings / 'config.toml'}"
    with pytest.raises(InvalidSettingError) as raised:
        load_settings()
    message = str(raised.value)
    assert says in message
    wrong = {"environment": ["config.toml", ".env"], ".env": ["config.toml", "(environment)"]}
    for other in wrong.get(where, [".env", "(environment)"]):
        assert other not in message


def test_a_misspelled_config_key_is_named_with_the_closest_setting(isolated_settings, caplog):
    from whisperq.settings import load_settings

    (isolated_settings / "config.toml").write_text('bukcet = "calls"\nmodel = "tiny.en"\n')
    with caplog.at_level("WARNING", logger="whisperq.settings"):
        settings = load_settings()
    assert settings.bucket == ""  # ignored, as before: but now said
    (message,) = [r.getMessage() for r in caplog.records if "bukcet" in r.getMessage()]
    assert "'bukcet' is not a whisperq setting" in message and "did you mean 'bucket'" in message
