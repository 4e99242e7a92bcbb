import pytest

from whisperq.schemas import Segment
from whisperq.transcripts import render


def seg(start, end, text):
    return Segment(start=start, end=end, text=text, avg_logprob=-0.1, no_speech_prob=0.01)


@pytest.mark.parametrize(
    ("seconds", "srt", "vtt"),
    [
        (0, "00:00:00,000", "00:00:00.000"),
        (1.0005, "00:00:01,001", "00:00:01.001"),  # half-up on the decimal value
        (1.0004999, "00:00:01,000", "00:00:01.000"),
        (5.6000000000000005, "00:00:05,600", "00:00:05.600"),
        (59.9995, "00:01:00,000", "00:01:00.000"),  # rounding carries into minutes
        (3599.9999, "01:00:00,000", "01:00:00.000"),  # ... and into hours
        (3 * 3600 + 25 * 60 + 7.25, "03:25:07,250", "03:25:07.250"),
        (123 * 3600, "123:00:00,000", "123:00:00.000"),  # long recordings do not wrap
        (-0.2, "00:00:00,000", "00:00:00.000"),
    ],
)
def test_timestamps(seconds, srt, vtt):
    assert render.srt_timestamp(seconds) == srt
    assert render.vtt_timestamp(seconds) == vtt


def test_srt_numbers_cues_and_skips_empty_segments():
    segments = [seg(0.0, 1.5, " Hello."), seg(1.5, 2.0, "   "), seg(2.0, 3.25, "Bye  now.")]
    assert render.render_srt(segments) == (
        "1\n00:00:00,000 --> 00:00:01,500\nHello.\n\n2\n00:00:02,000 --> 00:00:03,250\nBye now.\n"
    )


def test_vtt_has_header_and_dot_timestamps():
    assert render.render_vtt([seg(3600.5, 3601, "Late.")]) == (
        "WEBVTT\n\n01:00:00.500 --> 01:00:01.000\nLate.\n"
    )


def test_end_before_start_is_clamped():
    assert "00:00:02,000 --> 00:00:02,000" in render.render_srt([seg(2.0, 1.0, "x")])


def test_empty_transcripts_render_valid_empty_files():
    assert render.render_srt([]) == ""
    assert render.render_vtt([]) == "WEBVTT\n"
    assert render.render_txt([seg(0, 1, " ")]) == ""


def test_txt_is_one_line_per_segment():
    assert render.render_txt([seg(0, 1, " One."), seg(1, 2, "Two.")]) == "One.\nTwo.\n"
