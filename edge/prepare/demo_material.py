"""Fidelity-gate material that any machine has: the demo clip (``edge.demo``: a real face photograph, gently
animated, with speech from espeak-ng) and sentences written for this project.

A user's machine has no calibration data.  Profiles that ship their statically quantized networks
(``prequantized``, calibrated on real data when the profile was packaged) need samples only to *check* the INT8
variants against FP32 on the user's machine; this module provides them.  It is never used to set quantization
ranges: one synthetic speaker and one face are a fine check, but a poor calibration set.
"""

from __future__ import annotations

import logging

import numpy as np

from edge.prepare.feeds import Material, Split

log = logging.getLogger("edge")

#: English sentences for the text encoder's gate (written for this project; no data set's text).
GATE_TEXTS: tuple[str, ...] = (
    "I can't believe you did that again, it makes me furious.",
    "That smell is disgusting, please open a window.",
    "I'm scared to walk home alone tonight.",
    "We won the match and everyone is celebrating!",
    "The meeting moved to three o'clock on Thursday.",
    "I miss her so much since she moved away.",
    "Wow, I never expected to see you here!",
    "Thanks a lot, this is exactly what I needed.",
    "Stop shouting at me, I heard you the first time.",
    "Honestly the food tasted like cardboard.",
    "What if the bridge collapses while we are on it?",
    "My sister just had a baby girl, we are thrilled.",
    "Please put the boxes next to the door.",
    "Nobody came to his birthday party, it was heartbreaking.",
    "You got the job? That's amazing news!",
    "The train is late again and I am losing my patience.",
    "I feel sick just thinking about what they did.",
    "There is a strange noise coming from the basement.",
    "This is the best day of my whole life.",
    "The report is on the second shelf.",
    "I failed the exam even though I studied all week.",
    "Oh my goodness, you remembered my birthday!",
    "Could you tell me where the nearest pharmacy is?",
    "Leave me alone, I do not want to talk about it.",
    "It breaks my heart to see the old house empty.",
    "I'm so proud of what you have achieved this year.",
    "They lied to us, and I am absolutely livid.",
    "Ugh, there is hair in my soup.",
    "I keep hearing footsteps behind me.",
    "The package should arrive by Monday afternoon.",
    "What a lovely surprise to find flowers on my desk.",
    "I'm sorry for your loss, he was a wonderful man.",
    "Really? You sold the car already?",
    "We laughed until our stomachs hurt.",
    "Turn left after the bakery and keep going straight.",
    "Don't touch that, it's covered in mould.",
    "My hands are shaking, I think someone is inside.",
    "You always ruin everything, I'm done with this.",
    "The weather should be mild for the rest of the week.",
    "I wish things had turned out differently for us.",
)


def demo_material(*, window_samples: int, sample_rate: int, videos: int = 4, frames_per_video: int = 12) -> Material:
    """Frames (``videos`` consecutive parts of the demo clip, ``frames_per_video`` evenly spaced from each),
    audio windows (``window_samples`` long, sliding by a quarter window over the clip's speech) and
    :data:`GATE_TEXTS`."""
    from edge.demo import make_demo_clip
    from edge.media import read_audio
    from edge.video import VideoFileReader

    path = make_demo_clip()
    log.info("fidelity-gate material from the demo clip %s", path)
    frames = [rgb for _, rgb in VideoFileReader(path)]
    material = Material(texts=list(GATE_TEXTS))
    for part in np.array_split(np.arange(len(frames)), videos):
        if len(part):
            picks = part[np.linspace(0, len(part) - 1, min(frames_per_video, len(part))).round().astype(int)]
            material.frames.append([frames[i] for i in picks])
    audio, _ = read_audio(path, sample_rate=sample_rate)
    hop = max(1, window_samples // 4)
    for start in range(0, max(1, audio.size - window_samples // 2), hop):
        window = np.zeros(window_samples, np.float32)
        piece = audio[start:start + window_samples]
        window[: piece.size] = piece
        material.windows.append(window)
    return material


#: Where the demo material comes from (recorded in manifests).
DEMO_SOURCE = "demo clip (edge.demo) + edge.prepare.demo_material.GATE_TEXTS"


def demo_split() -> Split:
    """Every sample goes to the gate (one 'calibration' sample is split off and unused: nothing is calibrated)."""
    return Split(calibrate=1, holdout=64, lfmim_holdout=128, seed=0)
