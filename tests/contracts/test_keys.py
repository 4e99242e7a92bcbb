import pytest

from whisperq import keys


def test_layout_of_every_key():
    assert keys.input_key("weekly", "calls/a/x.wav") == "inputs/weekly/calls/a/x.wav"
    assert keys.manifest_key("weekly") == "batches/weekly/manifest.json"
    assert keys.batch_info_key("weekly") == "batches/weekly/batch.json"
    assert keys.result_key("weekly", "calls/a/x.wav", "srt") == "results/weekly/calls/a/x.wav.srt"
    assert keys.error_key("weekly", "a/x.wav") == "results/weekly/a/x.wav.error.json"
    assert keys.results_prefix("weekly") == "results/weekly/"


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("results/b/a/x.wav.json", ("a/x.wav", "json")),
        ("results/b/a/x.wav.error.json", ("a/x.wav", "error")),
        ("results/b/Café — Zoë.mp3.vtt", ("Café — Zoë.mp3", "vtt")),
        ("results/b/x.wav.txt", ("x.wav", "txt")),
        ("results/b/x.wav.png", None),
        ("results/other/x.wav.json", None),
        ("inputs/b/x.wav", None),
    ],
)
def test_parse_result_key(key, expected):
    assert keys.parse_result_key("b", key) == expected


def test_parse_is_the_inverse_of_building():
    for fmt in keys.RESULT_FORMATS:
        assert keys.parse_result_key("b", keys.result_key("b", "d/e f.wav", fmt)) == (
            "d/e f.wav",
            fmt,
        )
    assert keys.parse_result_key("b", keys.error_key("b", "d/x.wav")) == ("d/x.wav", "error")
    redacted = keys.redacted_audio_key("b", "d/x.wav")
    assert redacted == "results/b/d/x.wav.redacted.wav"
    assert keys.parse_result_key("b", redacted) == ("d/x.wav", "audio")
    # A submitted file whose own name ends like that is still a file, not an audio copy.
    assert keys.parse_result_key("b", "results/b/y.redacted.wav.json") == ("y.redacted.wav", "json")


@pytest.mark.parametrize("name", ["weekly", "2026-11-21", "a.b_c-d", "x" * 128])
def test_valid_batch_names(name):
    assert keys.validate_batch_name(name) == name


@pytest.mark.parametrize("name", ["", "-x", "a/b", "a b", "..", "a..b", "x" * 129, "é"])
def test_invalid_batch_names_say_the_rule(name):
    with pytest.raises(keys.InvalidKeyError, match="letters, digits"):
        keys.validate_batch_name(name)


def test_relative_paths_are_posix_nfc_and_clean():
    nfd = "Cafe\u0301.wav"  # as macOS spells it
    assert keys.normalize_relative_path(nfd) == "Caf\u00e9.wav"
    assert keys.normalize_relative_path("./a//b\\c.wav") == "a/b/c.wav"
    for bad in ["", ".", "../x.wav", "a/../../x.wav"]:
        with pytest.raises(keys.InvalidKeyError):
            keys.normalize_relative_path(bad)


@pytest.mark.parametrize("name", ["call\n1.wav", "a/b\tc.wav", "x\x00.wav", "bell\x07.wav"])
def test_a_name_with_a_control_character_is_refused_with_the_reason(name):
    with pytest.raises(keys.InvalidKeyError, match=r"control character.*rename the file"):
        keys.normalize_relative_path(name)


def test_a_path_too_long_for_an_s3_key_is_refused_and_the_limit_holds_for_every_key():
    fits = "d/" * 200 + "x" * (keys.MAX_RELATIVE_PATH_BYTES - 404) + ".wav"
    assert len(fits.encode()) == keys.MAX_RELATIVE_PATH_BYTES
    path = keys.normalize_relative_path(fits)
    batch = "b" * 128  # the longest batch name
    for key in (
        keys.entry_key(batch, path, 10**9),
        keys.result_key(batch, path, "json"),
        keys.error_key(batch, path),
        keys.input_key(batch, path),
    ):
        assert len(key.encode()) <= 1024, key[-40:]
    with pytest.raises(keys.InvalidKeyError, match="shorten it"):
        keys.normalize_relative_path("é" + fits)  # one more byte (two, in UTF-8)


def test_batch_from_listing_prefix():
    assert keys.batch_from_prefix("batches/weekly/") == "weekly"


def test_entry_keys_carry_the_duration_and_parse_back_for_any_path():
    for path in ["a.wav", "calls/a.wav/12345.json", "Café — Zoë 1.wav", "x/unknown.json"]:
        for duration in (None, 0.0, 12.3456, 3600.0):
            key = keys.entry_key("b", path, duration)
            assert key.startswith("batches/b/files/")
            expected = None if duration is None else round(duration * 1000) / 1000
            assert keys.parse_entry_key("b", key) == (path, expected)
    assert keys.entry_key("b", "a.wav", 12.3456) == "batches/b/files/a.wav/12346.json"
    assert keys.parse_entry_key("b", "batches/b/batch.json") is None
    assert keys.parse_entry_key("b", "batches/b/files/a.wav/notanumber.json") is None
    assert keys.parse_entry_key("other", keys.entry_key("b", "a.wav", 1.0)) is None


def test_incoming_keys_name_a_batch_and_a_path():
    assert keys.parse_incoming_key("incoming/support/2026/11/call 1.wav") == (
        "support",
        "2026/11/call 1.wav",
    )
    assert keys.parse_incoming_key("rec/acme/x.wav", prefix="rec/") == ("acme", "x.wav")
    for bad in ["incoming/x.wav", "incoming/../x.wav", "incoming/ok/../../x.wav", "other/b/x"]:
        with pytest.raises(keys.InvalidKeyError):
            keys.parse_incoming_key(bad)
