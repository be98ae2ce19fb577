"""The speech of ``edge-bench asr``: real recorded sentences with their transcripts, and espeak-ng speech made here.

Each set is a list of :class:`Utterance` (audio path, reference text, language) in a fixed order that spreads any
prefix over the set (``--limit N`` keeps the first N: every RAVDESS actor and both sentences even for small N).
``split``: ``"val"`` keeps the odd positions of that order, ``"test"`` the even ones, ``"all"`` both (choose
settings on val, report on test).

- ``ravdess``: RAVDESS speech (``ravdess-speech/``, 20 actors here), whose file names carry the statement: 01 "Kids
  are talking by the door", 02 "Dogs are sitting by the door"; ordered round-robin over actors, statements and
  emotions.
- ``crema-d``: the CREMA-D clips (``crema-d-samples/``), all "Don't forget a jacket" (DFA).
- ``esd``: ESD speaker 0020 (``esd-0020/labels.csv``): each of its 200 sentences once, the emotion rotating.
- ``espeak``: :data:`ESPEAK_SENTENCES` x :data:`ESPEAK_VOICES`, synthesised into a cache folder on first use.
- ``aishell``: Mandarin read speech (``aishell-sample/transcripts.csv``, tests and benchmarks only), in file order.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edge.errors import DataError, InputError

RAVDESS_STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
CREMA_D_SENTENCES = {"DFA": "Don't forget a jacket"}
ESPEAK_SENTENCES = (
    "the quick brown fox jumps over the lazy dog",
    "i would like a cup of coffee please",
    "please call me back tomorrow morning",
    "what time is it now",
    "thank you very much",
    "good morning how are you today",
)
#: espeak-ng voices: US English female and male variants, British English, and the default voice.
ESPEAK_VOICES = ("en-us+f2", "en-us+m3", "en-gb", "en")
SETS = ("ravdess", "crema-d", "esd", "espeak", "aishell")
SPLITS = ("val", "test", "all")


@dataclass(frozen=True)
class Utterance:
    set: str
    id: str
    path: Path
    text: str
    language: str  # "en" (scored by WER) or "zh" (CER)


def data_root() -> Path:
    """``$LFMIM_DATA`` or ``../shared/data`` beside the repository."""
    return Path(os.environ.get("LFMIM_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataError(f"{path}: not found; point LFMIM_DATA at the shared data folder, or leave this set out")
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _round_robin(groups: dict[str, list[Utterance]]) -> list[Utterance]:
    out: list[Utterance] = []
    lists = [groups[k] for k in sorted(groups)]
    for i in range(max((len(v) for v in lists), default=0)):
        out += [v[i] for v in lists if i < len(v)]
    return out


def ravdess(root: Path) -> list[Utterance]:
    folder = root / "ravdess-speech"
    groups: dict[str, list[Utterance]] = {}
    for row in _rows(folder / "labels.csv"):
        parts = Path(row["file"]).stem.split("-")
        if len(parts) != 7 or parts[4] not in RAVDESS_STATEMENTS:
            raise DataError(f"{folder}/labels.csv: {row['file']} is not a RAVDESS name (modality-channel-emotion-"
                            "intensity-statement-repetition-actor)")
        u = Utterance("ravdess", Path(row["file"]).stem, folder / row["file"], RAVDESS_STATEMENTS[parts[4]], "en")
        groups.setdefault(row["actor"], []).append(u)
    for actor, items in groups.items():  # within an actor: alternate statements, then emotions
        items.sort(key=lambda u: (u.id.split("-")[5], u.id.split("-")[3], u.id.split("-")[2], u.id.split("-")[4]))
        by_statement = {s: [u for u in items if u.id.split("-")[4] == s] for s in RAVDESS_STATEMENTS}
        groups[actor] = _round_robin(by_statement)
    return _round_robin(groups)


def crema_d(root: Path) -> list[Utterance]:
    folder = root / "crema-d-samples"
    out = []
    for row in _rows(folder / "labels.csv"):
        code = Path(row["file"]).stem.split("_")[1]
        if code not in CREMA_D_SENTENCES:
            raise DataError(f"{folder}/labels.csv: {row['file']} has sentence code {code!r}; known: "
                            f"{', '.join(CREMA_D_SENTENCES)}")
        out.append(Utterance("crema-d", Path(row["file"]).stem, folder / row["file"], CREMA_D_SENTENCES[code], "en"))
    return out


def esd(root: Path) -> list[Utterance]:
    folder = root / "esd-0020"
    by_text: dict[str, list[dict[str, str]]] = {}
    for row in _rows(folder / "labels.csv"):
        by_text.setdefault(row["text"].strip(), []).append(row)
    out = []
    for i, (text, rows) in enumerate(by_text.items()):
        rows.sort(key=lambda r: r["emotion"])
        row = rows[i % len(rows)]
        out.append(Utterance("esd", Path(row["file"]).stem, folder / row["file"], text, "en"))
    return out


def aishell(root: Path) -> list[Utterance]:
    folder = root / "aishell-sample"
    return [Utterance("aishell", Path(r["file"]).stem, folder / r["file"], r["text"], "zh")
            for r in _rows(folder / "transcripts.csv")]


def espeak(cache: Path) -> list[Utterance]:
    from edge.testmedia import synth_speech

    out = []
    for i, sentence in enumerate(ESPEAK_SENTENCES):
        for voice in ESPEAK_VOICES:
            key = hashlib.sha256(f"{voice}|{sentence}".encode()).hexdigest()[:12]
            path = cache / f"espeak-{key}.wav"
            if not path.is_file():
                cache.mkdir(parents=True, exist_ok=True)
                tmp = cache / f".{path.name}.{os.getpid()}.wav"
                synth_speech(sentence, tmp, voice=voice, rate=160)
                os.replace(tmp, path)
            out.append(Utterance("espeak", f"{voice}/{i}", path, sentence, "en"))
    return _round_robin({voice: [u for u in out if u.id.startswith(voice + "/")] for voice in ESPEAK_VOICES})


_LOADERS: dict[str, Callable[[Path], list[Utterance]]] = {"ravdess": ravdess, "crema-d": crema_d, "esd": esd,
                                                            "aishell": aishell}


def load_set(name: str, *, root: Path | None = None, cache: Path | None = None, split: str = "all",
             limit: int = 0) -> list[Utterance]:
    """The utterances of set ``name`` (see the module notes), ``split`` of them, the first ``limit`` (0 = all)."""
    if name not in SETS:
        raise InputError(f"unknown speech set {name!r}; known: {', '.join(SETS)}")
    if split not in SPLITS:
        raise InputError(f"--split {split!r}: expected one of {', '.join(SPLITS)}")
    if name == "espeak":
        from edge.asr.whisper_models import cache_dir

        items = espeak(cache or cache_dir() / "bench-espeak")
    else:
        items = _LOADERS[name](root or data_root())
    if split != "all":
        items = items[1::2] if split == "val" else items[0::2]
    return items[:limit] if limit else items


__all__ = ["CREMA_D_SENTENCES", "ESPEAK_SENTENCES", "ESPEAK_VOICES", "RAVDESS_STATEMENTS", "SETS", "SPLITS",
           "Utterance", "data_root", "load_set"]
