"""Profiles: the shipped paper profile, TOML parsing, hashing, errors."""

from __future__ import annotations

import pytest

from edge.config import LFMIMConfig
from edge.errors import ConfigError
from edge.profile import load_profile, profile_hash, shipped_profiles


def test_paper_profile_is_the_papers_setting():
    p = load_profile("paper")
    assert "paper" in shipped_profiles()
    assert p.lfmim == LFMIMConfig()
    assert (p.text.tokens, p.text.dim, p.audio.frames, p.audio.dim, p.vision.frames, p.vision.dim) == (80, 768, 100, 768, 64, 512)
    assert p.audio.sample_rate == 16000 and p.vision.face_size == 224 and (p.vision.segments, p.vision.per_segment) == (8, 8)
    assert p.audio.window_samples == 64000


def test_profile_from_a_file_and_its_hash(tmp_path):
    text = (tmp_path / "p.toml")
    text.write_text('name = "mine"\n[audio]\nframes = 50\nwindow_s = 2\n[lfmim]\nd_model = 64\nnum_heads = 4\n')
    p = load_profile(text)
    assert p.lfmim.audio.length == 50 and p.lfmim.d_model == 64 and p.audio.window_s == 2.0
    again = load_profile(text)
    assert profile_hash(p) == profile_hash(again)
    text.write_text('name = "mine"\n[audio]\nframes = 51\n')
    assert profile_hash(load_profile(text)) != profile_hash(p)


@pytest.mark.parametrize("body,match", [
    ('name = "x"\n[audio]\nframez = 3\n', r"unknown key\(s\) in \[audio\]: framez"),
    ('name = "x"\n[audio]\nframes = "many"\n', r"\[audio\] frames must be int"),
    ('name = "x"\n[lfmim]\nnum_heads = 5\n', "multiple of num_heads"),
    ('name = "x"\nextra = 1\n', "unknown top-level key"),
    ('[text]\n', "needs a name"),
    ('name = "x\n', "not valid TOML"),
])
def test_bad_profiles_are_one_clear_error(tmp_path, body, match):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=match):
        load_profile(path)


def test_unknown_profile_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="not a shipped profile \\(paper"):
        load_profile("nonexistent")
