"""The starter LFMIM's composite training set (numpy only).

No real data set with separate labels per modality is available here, so the starter LFMIM learns from a composite
one: for every EmotionTalk utterance (real Chinese dialogue, four labels annotated per modality as in CHERMA) a
GoEmotions sentence with its *text* label, a RAVDESS clip with its *audio* label and a FER2013 face with its
*vision* label are drawn; the sample's multimodal label is EmotionTalk's.  Each uni-modal branch thus learns from
real data of its own modality, and the fused branch learns how people combine modalities that disagree (the
label tuples' disagreement is real; the pairing of text, voice and face within a sample is not).  The Chinese
profile (starter-zh) keeps each utterance's own transcript as its text instead of a drawn English sentence.

Splits never mix: EmotionTalk's train rows make the composite train and valid splits (a seeded fraction held out),
its val rows the composite test split; each modality's pool has the same three splits, drawn from its own data
set's held-out parts (GoEmotions train/dev/test; RAVDESS actors 1-16 / 17-18 / 19-20; FER2013 train minus a
stratified tenth / that tenth / public test).

CREMA-D's perception study adds real English label tuples (:func:`crema_rows`: text neutral, the voice, face and
multimodal votes; split by actor, :func:`edge.train.crema_votes.actor_split`).

Uni-modal labels without another data set's priors (:func:`own_prior_keep`): EmotionTalk's tuples are mostly
neutral, and a uni-modal head trained on them learns that prior, not its own data set's.  So in the training split
each uni-modal label of a tuple is kept with a per-class probability that makes the kept labels follow a target
distribution (the modality's own data set's, or uniform), and masked (-1, no loss) otherwise; the fused label is
always kept.  Uni-modal-only samples (:func:`own_samples`: one modality's input, the others zero, only that
label) add every pool sample under its own data set's distribution.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from edge.errors import DataError
from edge.labels import NUM_CLASSES, to_index

SPLITS = ("train", "valid", "test")
#: Label columns of emotiontalk.csv, in the store's t, a, v, m order.
LABEL_COLUMNS = ("label_text", "label_audio", "label_vision", "label_multimodal")


@dataclass(frozen=True)
class LabelRow:
    id: str
    labels: tuple[int, int, int, int]  # t, a, v, m
    text: str = ""  # the utterance's transcript as EmotionTalk gives it (markup included)

    @property
    def group(self) -> str:
        """The recording group of an EmotionTalk id (``G00009/G00009_42/...`` -> ``G00009``): a pair of actors in
        dialogue; EmotionTalk's own train and val splits share no group."""
        return self.id.split("/", 1)[0]


def read_emotiontalk(path: str | Path) -> dict[str, list[LabelRow]]:
    """emotiontalk.csv -> {EmotionTalk split: rows} with canonical label indices."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: EmotionTalk table not found; pass the emotiontalk.csv of ../shared/data")
    out: dict[str, list[LabelRow]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("id", "split", *LABEL_COLUMNS) if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
        for lineno, row in enumerate(reader, 2):
            labels = tuple(to_index(row[c], "emotiontalk", source=f"{path}:{lineno}") for c in LABEL_COLUMNS)
            out.setdefault(row["split"], []).append(
                LabelRow(row["id"], labels, row.get("text") or ""))  # type: ignore[arg-type]
    return out


def holdout_groups(rows: Sequence[LabelRow], fraction: float, seed: int = 0) -> tuple[str, ...]:
    """Whole recording groups (seeded order) held out until they hold at least ``fraction`` of ``rows``."""
    groups = sorted({r.group for r in rows})
    sizes = {g: sum(r.group == g for r in rows) for g in groups}
    picked: list[str] = []
    for i in np.random.default_rng(seed).permutation(len(groups)):
        if sum(sizes[g] for g in picked) >= fraction * len(rows):
            break
        picked.append(groups[i])
    if len(picked) == len(groups):
        raise DataError(f"holding out {fraction:.0%} by group leaves no training group ({len(groups)} groups)")
    return tuple(sorted(picked))


def composite_splits(table: dict[str, list[LabelRow]], *, valid_fraction: float = 0.1, seed: int = 0,
                     by_group: bool = False) -> dict[str, list[LabelRow]]:
    """EmotionTalk train -> composite train + valid, EmotionTalk val -> composite test.

    ``valid`` is a seeded random ``valid_fraction`` of the train rows, or with ``by_group`` whole recording groups
    (:func:`holdout_groups`), so that no speaker or dialogue of ``valid`` is in ``train`` (as EmotionTalk's own val
    split is built; needed where an encoder was trained on the utterances' own transcripts).
    """
    if "train" not in table or "val" not in table:
        raise DataError(f"EmotionTalk table needs train and val rows, has splits {sorted(table)}")
    rows = table["train"]
    if by_group:
        held = set(holdout_groups(rows, valid_fraction, seed))
        return {"train": [r for r in rows if r.group not in held], "valid": [r for r in rows if r.group in held],
                "test": list(table["val"])}
    order = np.random.default_rng(seed).permutation(len(rows))
    cut = int(round(valid_fraction * len(rows)))
    return {"train": [rows[i] for i in sorted(order[cut:])], "valid": [rows[i] for i in sorted(order[:cut])],
            "test": list(table["val"])}


class Pool:
    """Indices of one modality's samples of one split, grouped by class, for drawing."""

    def __init__(self, labels: np.ndarray, name: str) -> None:
        self.name = name
        self.labels = np.asarray(labels, np.int64)
        self.by_class = [np.flatnonzero(self.labels == c) for c in range(NUM_CLASSES)]

    def draw(self, label: int, rng: np.random.Generator) -> int:
        choices = self.by_class[label]
        if choices.size == 0:
            raise DataError(f"{self.name}: no sample of class {label}; the pool must cover all {NUM_CLASSES} classes")
        return int(choices[rng.integers(choices.size)])

    def counts(self) -> list[int]:
        return [int(c.size) for c in self.by_class]


def crema_rows(path: str | Path) -> dict[str, list[LabelRow]]:
    """CREMA-D's votes as label rows {train, valid, test} by actor: (neutral, voice, face, multimodal); a vote split
    between codes takes the one with the highest agreement level."""
    from edge.labels import INDEX
    from edge.train.crema_votes import actor_split, read_crema_votes

    out: dict[str, list[LabelRow]] = {s: [] for s in SPLITS}
    for r in read_crema_votes(path):
        out[actor_split(r.actor)].append(LabelRow(f"crema:{r.file}", (INDEX["neutral"], r.voice[0], r.face[0], r.multi[0])))
    return out


def own_prior_keep(labels: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per-class keep probabilities (classes,) that turn the distribution of ``labels`` into ``target``:
    ``target_c / freq_c`` scaled so the largest is 1 (a class absent from ``labels`` gets 0)."""
    freq = np.bincount(np.asarray(labels, np.int64), minlength=NUM_CLASSES).astype(np.float64)
    target = np.asarray(target, np.float64)
    if target.shape != (NUM_CLASSES,) or (target < 0).any() or target.sum() <= 0:
        raise DataError(f"target distribution must be {NUM_CLASSES} non-negative weights, got {target}")
    ratio = np.divide(target / target.sum(), freq / max(freq.sum(), 1.0), out=np.zeros(NUM_CLASSES), where=freq > 0)
    return ratio / ratio.max() if ratio.max() > 0 else ratio


def draw_samples(rows: Sequence[LabelRow], pools: dict[str, Pool], *, draws: int, seed: int,
                 keep: dict[str, np.ndarray] | None = None, own_text: bool = False
                 ) -> Iterator[tuple[str, int, int, int, tuple[int, int, int, int]]]:
    """(sample id, text index, audio index, vision index, labels) for each row, ``draws`` times per row.

    With ``own_text`` the text is the row's own transcript (index = the row's position in ``rows``; no text pool is
    needed): real text with its real text label, as in starter-zh, instead of a sentence drawn by label.
    ``keep`` (modality -> per-class keep probability, :func:`own_prior_keep`) masks uni-modal labels (-1) at
    random so that the kept ones follow a target distribution; the inputs are drawn by the true label either way."""
    rng = np.random.default_rng(seed)
    mask_rng = np.random.default_rng(seed + 7919)
    for k in range(draws):
        for i, row in enumerate(rows):
            t, a, v, m = row.labels
            labels = list(row.labels)
            if keep:
                for col, name in enumerate(("text", "audio", "vision")):
                    if name in keep and mask_rng.random() >= keep[name][labels[col]]:
                        labels[col] = -1
            text = i if own_text else pools["text"].draw(t, rng)
            yield (f"{row.id}#{k}", text, pools["audio"].draw(a, rng),
                   pools["vision"].draw(v, rng), tuple(labels))  # type: ignore[misc]


def own_samples(labels: np.ndarray, modality: str) -> Iterator[tuple[int, tuple[int, int, int, int]]]:
    """(pool index, labels) for every sample of one modality's pool, only that modality's label set."""
    col = ("text", "audio", "vision").index(modality)
    for i, y in enumerate(np.asarray(labels, np.int64).tolist()):
        labels_ = [-1, -1, -1, -1]
        labels_[col] = y
        yield i, tuple(labels_)  # type: ignore[misc]


def vision_sequence(variants: np.ndarray, length: int, rng: np.random.Generator, *, noise: float = 0.0) -> np.ndarray:
    """A face's (K, D) feature variants (e.g. the face and its mirror image) -> (length, D) frames: each frame one
    variant, plus Gaussian noise of ``noise`` times each dimension's spread across the variants' mean magnitude
    (frame-to-frame jitter of a face that barely moves)."""
    variants = np.asarray(variants, np.float32)
    picks = rng.integers(len(variants), size=length)
    frames = variants[picks].copy()
    if noise > 0:
        scale = noise * (np.abs(variants).mean(axis=0, keepdims=True) + 1e-6)
        frames += rng.standard_normal(frames.shape).astype(np.float32) * scale
    return frames


def place_in_window(clip: np.ndarray, window: int, rng: np.random.Generator | None) -> np.ndarray:
    """A clip inside a window of silence: at a random offset (``rng``) or centred (None); longer clips are cut."""
    clip = np.asarray(clip, np.float32).reshape(-1)
    out = np.zeros(window, np.float32)
    if clip.size >= window:
        start = (clip.size - window) // 2 if rng is None else int(rng.integers(clip.size - window + 1))
        return clip[start:start + window].copy()
    offset = (window - clip.size) // 2 if rng is None else int(rng.integers(window - clip.size + 1))
    out[offset:offset + clip.size] = clip
    return out
