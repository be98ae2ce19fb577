#!/usr/bin/env python
"""Write the starter LFMIM's composite feature store (see edge.starter.composite) from ../shared/data.

    python scripts/make_starter_composite.py                       # -> runs/starter/composite (a feature store)
    edge-train --store runs/starter/composite --out runs/starter/lfmim --model paper --optimizer adamw ...
    edge-eval --checkpoint runs/starter/lfmim/best.safetensors --store runs/starter/composite --split test ...

Features are what the starter profile's run path produces:
- text: all-MiniLM-L6-v2 token features of ``[CLS] + 30 word pieces + [SEP]`` (32 x 384), zero past the text (as
  ``Extractors.text``), from the GoEmotions-Ekman single-label rows (train capped per class with ``--text-cap``);
- audio: the log-mel CNN (``--audio-encoder`` ONNX, FP32) over consecutive 1 s blocks of a 4 s window holding the
  RAVDESS clip (random offset in silence for train, ``--audio-variants`` per clip; centred otherwise), frames fitted
  to 50 by uniform sampling (``Extractors.audio``);
- vision: the face encoder (``--vision-encoder`` ONNX, FP32) on each FER2013 face and its mirror image, as the run
  path feeds it (grey replicated to RGB, ``normalize_faces``); a sample's 16 frames are those two variants with a
  little jitter (one face that barely moves over the window).
Pools are cached under ``--cache`` (git-ignored runs/cache), keyed by the encoder's SHA-256.

Chinese (starter-zh): ``--text-source emotiontalk --text-encoder runs/starter-zh/text/text_encoder.onnx`` gives each
sample its EmotionTalk utterance's own transcript (cleaned as ``edge.starter.zh_text.clean_transcript``) encoded by
that ONNX encoder with the ``tokenizer.json`` beside it (``--text-tokens`` ids, zero past [SEP]), and holds the
valid split out by recording group (``--valid-by-group``, the default there: the encoder was fine-tuned on the train
groups' transcripts, so valid must be groups it never saw); no ``goemotions_test`` split then (LFMIM's text head is
scored on ``test``, EmotionTalk's val transcripts with their text labels).

Splits: ``train``, ``valid`` and ``test`` are composite (EmotionTalk label tuples, and with ``--crema-votes`` the
real English tuples of CREMA-D's perception study in train and valid); ``crema_test`` holds the CREMA-D tuples of
the test actors (1001-1009); ``goemotions_test``, ``ravdess_test`` and ``fer_test`` hold each modality's own test
set once (the other inputs zero, their labels -1), so that ``edge-eval`` reports the uni-modal targets on exactly
those sets, and ``goemotions_valid``, ``ravdess_valid``, ``fer_valid`` their validation sets (GoEmotions dev,
RAVDESS actors 17-18, FER2013's held-out tenth) for calibrating and selecting the uni-modal heads.

``--unimodal-prior own`` (default) keeps a training tuple's uni-modal label with a per-class probability that makes
the kept labels follow that modality's own data set (``balanced``: uniform; ``tuples``: keep all, the label tuples'
priors, the recipe before); ``--own-draws N`` adds every training pool sample N times as a uni-modal-only sample.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from edge.labels import CLASSES, NUM_CLASSES  # noqa: E402
from edge.starter.composite import (  # noqa: E402
    SPLITS, Pool, composite_splits, crema_rows, draw_samples, own_prior_keep, own_samples, place_in_window,
    read_emotiontalk, vision_sequence,
)

log = logging.getLogger("edge")
WINDOW = 64_000  # 4 s at 16 kHz
AUDIO_FRAMES, VISION_FRAMES, TEXT_TOKENS = 50, 16, 32  # the starter profile's lengths (--text-tokens for others)


def sha(path: Path) -> str:
    from edge.fileio import sha256_file

    return sha256_file(path)[:16]


def cached(path: Path, key: dict, make):
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file() and json.loads(meta.read_text()) == key:
        with np.load(path) as z:
            log.info("cached pool %s", path.name)
            return {k: z[k] for k in z.files}
    data = make()
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **data)
    os.replace(tmp, path)
    meta.write_text(json.dumps(key) + "\n")
    return data


def session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


# ------------------------------------------------------------------------------------------------------ pools


def text_pools(args) -> dict[str, dict]:
    import train_starter_text as T

    from edge.features.text import load_text_encoder
    from edge.starter.text_model import find_minilm, read_goemotions

    model_dir = find_minilm()
    bundle = load_text_encoder(model_dir)
    weights = model_dir / "model.safetensors"
    model_key = f"{weights.stat().st_size}-{T._sha256((model_dir / 'config.json').read_bytes())[:16]}"
    rng = np.random.default_rng(args.seed)
    pools = {}
    for split, name in (("train", "train"), ("valid", "dev"), ("test", "test")):
        texts, labels = read_goemotions(args.data / "goemotions-ekman" / f"{name}.tsv")
        hidden, mask = T.cached_features(f"goemotions_{name}", texts, bundle, model_key, args.cache,
                                         length=TEXT_TOKENS, batch=64, progress=not args.no_progress)
        keep = np.arange(len(labels))
        if split == "train" and args.text_cap:
            keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[: args.text_cap]
                                           for c in range(NUM_CLASSES)]))
        feats = np.asarray(hidden[keep], np.float16) * mask[keep][..., None].astype(np.float16)  # zero past the text
        pools[split] = {"features": feats, "labels": labels[keep]}
        log.info("text %s: %d sentences, per class %s", split, len(keep), np.bincount(labels[keep], minlength=7).tolist())
    return pools


def transcript_features(args, rows: dict) -> dict[str, dict]:
    """Each composite split's own transcripts through the ONNX text encoder: {split: {"features": (N, T, D)}}, zero
    past [SEP] like the run path's ``Extractors.text``; cached, keyed by the encoder and the texts."""
    import hashlib

    import tokenizers
    from tqdm.auto import tqdm

    from edge.features.text_pre import encode_texts
    from edge.starter.zh_text import clean_transcript

    tokenizer_path = args.text_encoder.parent / "tokenizer.json"
    if not tokenizer_path.is_file():
        raise SystemExit(f"{tokenizer_path} not found: the text encoder's tokenizer.json must lie beside it")
    tokenizer = tokenizers.Tokenizer.from_file(str(tokenizer_path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    encoder = session(args.text_encoder, args.threads)
    pools = {}
    for split, split_rows in rows.items():
        texts = [clean_transcript(r.text) for r in split_rows]
        key = {"encoder": sha(args.text_encoder), "tokenizer": sha(tokenizer_path), "tokens": args.text_tokens,
               "texts": hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16], "v": 1}

        def make(texts=texts, split=split):
            out = []
            for i in tqdm(range(0, len(texts), 64), desc=f"text {split}", disable=args.no_progress):
                feeds = encode_texts(tokenizer, texts[i:i + 64], length=args.text_tokens)
                hidden = encoder.run(["hidden"], feeds)[0]
                out.append((hidden * feeds["attention_mask"][..., None]).astype(np.float16))
            return {"features": np.concatenate(out)}
        pools[split] = cached(args.cache / f"pool-transcripts-{split}.npz", {**key, "split": split}, make)
        log.info("text %s: %d transcripts", split, len(texts))
    return pools


def audio_pools(args) -> dict[str, dict]:
    import train_starter_audio as A

    from edge.features.audio_pre import fit_frames, num_frames

    data = A.load_ravdess(args.data / "ravdess-speech", args.cache)
    encoder = session(args.audio_encoder, args.threads)
    key = {"encoder": sha(args.audio_encoder), "variants": args.audio_variants, "seed": args.seed,
           "frames": AUDIO_FRAMES, "v": 1}
    actors = {"train": range(1, 17), "valid": range(17, 19), "test": range(19, 21)}
    rng = np.random.default_rng(args.seed)

    def encode(window: np.ndarray) -> np.ndarray:
        blocks = window.reshape(-1, 16_000)  # the run path's consecutive 1 s blocks, each encoded once
        hidden = encoder.run(["hidden"], {"waveform": blocks.astype(np.float32)})[0][:, : num_frames(16_000)]
        return fit_frames(hidden.reshape(-1, hidden.shape[-1]), AUDIO_FRAMES)

    pools = {}
    for split, who in actors.items():
        def make(split=split, who=who):
            from tqdm.auto import tqdm

            pick = np.flatnonzero(np.isin(data["actors"], list(who)))
            feats, labels = [], []
            variants = args.audio_variants if split == "train" else 1
            for i in tqdm(pick, desc=f"audio {split}", disable=args.no_progress):
                clip = data["pcm"][data["offsets"][i]:data["offsets"][i + 1]].astype(np.float32) / 32768.0
                for _ in range(variants):
                    feats.append(encode(place_in_window(clip, WINDOW, rng if split == "train" else None)))
                    labels.append(data["labels"][i])
            return {"features": np.asarray(feats, np.float16), "labels": np.asarray(labels, np.int64)}
        pools[split] = cached(args.cache / f"pool-audio-{split}.npz", {**key, "split": split}, make)
        log.info("audio %s: %d windows, per class %s", split, len(pools[split]["labels"]),
                 np.bincount(pools[split]["labels"], minlength=7).tolist())
    return pools


def vision_pools(args) -> dict[str, dict]:
    import train_starter_vision as V

    from edge.features.vision_pre import normalize_faces

    images, labels = V.load_npz(args.data / "fer2013" / "train.npz")
    test_images, test_labels = V.load_npz(args.data / "fer2013" / "publictest.npz")
    tr, va = V.split_validation(labels, 0.1, 0)  # the split the encoder was trained and selected on
    sets = {"train": (images[tr], labels[tr]), "valid": (images[va], labels[va]), "test": (test_images, test_labels)}
    encoder = session(args.vision_encoder, args.threads)
    key = {"encoder": sha(args.vision_encoder), "v": 1}
    pools = {}
    for split, (imgs, labs) in sets.items():
        def make(imgs=imgs, labs=labs):
            out = []
            for i in range(0, len(imgs), 256):
                rgb = np.repeat(imgs[i:i + 256, ..., None], 3, axis=-1)
                both = [encoder.run(["features"], {"faces": normalize_faces(x, size=48)})[0]
                        for x in (rgb, rgb[:, :, ::-1])]
                out.append(np.stack(both, axis=1))
            return {"features": np.concatenate(out).astype(np.float16), "labels": labs}
        pools[split] = cached(args.cache / f"pool-vision-{split}.npz", {**key, "split": split}, make)
        log.info("vision %s: %d faces", split, len(pools[split]["labels"]))
    return pools


# ------------------------------------------------------------------------------------------------------ store


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "starter" / "composite")
    p.add_argument("--cache", type=Path, default=ROOT / "runs" / "cache")
    p.add_argument("--audio-encoder", type=Path, default=ROOT / "runs" / "starter" / "audio" / "encoder.onnx")
    p.add_argument("--vision-encoder", type=Path, default=ROOT / "runs" / "starter" / "vision" / "encoder.onnx")
    p.add_argument("--draws", type=int, default=1, help="composite samples per EmotionTalk train row")
    p.add_argument("--text-cap", type=int, default=3000, help="GoEmotions train sentences kept per class")
    p.add_argument("--text-source", choices=("goemotions", "emotiontalk"), default="goemotions",
                   help="text drawn by label from GoEmotions (starter), or each utterance's own transcript (starter-zh)")
    p.add_argument("--text-encoder", type=Path, default=None,
                   help="ONNX text encoder (tokenizer.json beside it) for --text-source emotiontalk")
    p.add_argument("--text-tokens", type=int, default=TEXT_TOKENS)
    p.add_argument("--valid-by-group", choices=("auto", "yes", "no"), default="auto",
                   help="hold valid out by recording group (auto: with --text-source emotiontalk)")
    p.add_argument("--audio-variants", type=int, default=4, help="window placements per RAVDESS train clip")
    p.add_argument("--vision-jitter", type=float, default=0.05)
    p.add_argument("--crema-votes", type=Path, default=None,
                   help="CREMA-D's summaryTable.csv: its label tuples join EmotionTalk's (default: DATA/crema-d-votes/"
                        "summaryTable.csv; pass --no-crema to leave them out)")
    p.add_argument("--no-crema", action="store_true")
    p.add_argument("--unimodal-prior", choices=("own", "balanced", "tuples"), default="own",
                   help="distribution of the uni-modal labels kept in training tuples (see above)")
    p.add_argument("--own-draws", type=int, default=1, help="uni-modal-only training samples per pool sample")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from tqdm.auto import tqdm

    from edge.train.store_writer import FeatureStoreWriter

    own_text = args.text_source == "emotiontalk"
    needed = [args.audio_encoder, args.vision_encoder]
    if own_text:
        if args.text_encoder is None:
            raise SystemExit("--text-source emotiontalk needs --text-encoder (scripts/train_starter_zh_text.py writes it)")
        needed.append(args.text_encoder)
    for path in needed:
        if not path.is_file():
            raise SystemExit(f"{path} not found; train it first (scripts/train_starter_audio.py / _vision.py / "
                             "_zh_text.py) or pass --audio-encoder / --vision-encoder / --text-encoder")
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"{args.out} is not empty; remove it or pass another --out")
    args.cache.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    by_group = args.valid_by_group == "yes" or (args.valid_by_group == "auto" and own_text)
    rows = composite_splits(read_emotiontalk(args.data / "emotiontalk" / "emotiontalk.csv"), seed=args.seed,
                            by_group=by_group)
    crema: dict[str, list] = {s: [] for s in SPLITS}
    if not args.no_crema and not own_text:  # CREMA-D's text is its neutral English sentence: not for starter-zh
        crema = crema_rows(args.crema_votes or args.data / "crema-d-votes" / "summaryTable.csv")
    tuples = {"train": rows["train"] + crema["train"], "valid": rows["valid"] + crema["valid"], "test": rows["test"],
              "crema_test": crema["test"]}
    text = transcript_features(args, rows) if own_text else text_pools(args)
    feats = {"text": text, "audio": audio_pools(args), "vision": vision_pools(args)}
    text_dim = int(text["train"]["features"].shape[-1])
    keep = None
    if args.unimodal_prior != "tuples":
        train_labels = np.asarray([r.labels for r in tuples["train"]], np.int64)
        keep = {}
        for col, m in enumerate(("text", "audio", "vision")):
            if own_text and m == "text":  # each utterance keeps its own transcript and text label
                continue
            target = (np.bincount(feats[m]["train"]["labels"], minlength=NUM_CLASSES).astype(float)
                      if args.unimodal_prior == "own" else np.ones(NUM_CLASSES))
            keep[m] = own_prior_keep(train_labels[:, col], target)
            log.info("%s labels kept per class (%s prior): %s", m, args.unimodal_prior, np.round(keep[m], 3).tolist())
    specs = {"text": {"dim": text_dim, "length": args.text_tokens},  # each encoder's own width
             "audio": {"dim": int(feats["audio"]["train"]["features"].shape[-1]), "length": AUDIO_FRAMES},
             "vision": {"dim": int(feats["vision"]["train"]["features"].shape[-1]), "length": VISION_FRAMES}}
    rng = np.random.default_rng(args.seed + 1)
    summary = {"command": "python scripts/make_starter_composite.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "text_source": args.text_source, "valid_by_group": by_group, "splits": {}}
    if by_group:
        summary["valid_groups"] = sorted({r.group for r in rows["valid"]})
    with FeatureStoreWriter(args.out, specs, CLASSES, shard_size=2048, dtype="float16") as writer:
        zeros = {m: np.zeros((specs[m]["length"], specs[m]["dim"]), np.float16) for m in specs}
        for split in (*SPLITS, "crema_test"):
            if not tuples[split]:
                continue
            source = "test" if split == "crema_test" else split
            pools = {m: Pool(feats[m][source]["labels"], f"{m} pool ({source})") for m in feats
                     if not (own_text and m == "text")}
            draws = args.draws if split == "train" else 1
            n = 0
            for sid, t, a, v, labels in tqdm(draw_samples(tuples[split], pools, draws=draws, seed=args.seed,
                                                          keep=keep if split == "train" else None, own_text=own_text),
                                             total=draws * len(tuples[split]), desc=f"composite {split}",
                                             disable=args.no_progress):
                vision = vision_sequence(feats["vision"][source]["features"][v], VISION_FRAMES, rng,
                                         noise=args.vision_jitter)
                writer.add(split, sid, feats["text"][source]["features"][t], feats["audio"][source]["features"][a],
                           vision, labels)
                n += 1
            summary["splits"][split] = {"samples": n, "emotiontalk_rows": len(rows.get(split, [])),
                                        "crema_rows": len(crema["test"]) if split == "crema_test"
                                        else len(crema[split]) if split != "test" else 0,
                                        "pools": {m: pools[m].counts() for m in pools}}
            if split == "train":
                for m in ("text", "audio", "vision") if args.own_draws > 0 else ():
                    if own_text and m == "text":
                        continue
                    pool = feats[m]["train"]
                    for k in range(args.own_draws):
                        for i, labels in tqdm(own_samples(pool["labels"], m), total=len(pool["labels"]),
                                              desc=f"{m}-only train", disable=args.no_progress):
                            x = pool["features"][i]
                            if m == "vision":
                                x = vision_sequence(x, VISION_FRAMES, rng, noise=args.vision_jitter)
                            inputs = {**zeros, m: x}
                            writer.add(split, f"{m}-only-{i:05d}#{k}", inputs["text"], inputs["audio"],
                                       inputs["vision"], labels)
                            n += 1
                summary["splits"][split]["samples_with_own_only"] = n
                if keep is not None:
                    summary["splits"][split]["unimodal_keep"] = {m: np.round(keep[m], 4).tolist() for m in keep}
        # each modality's own test set, whole and once, for the uni-modal targets (edge-eval --split fer_test ...):
        # the other modalities' inputs are zeros and their labels -1 (LFMIM's uni-modal heads read only their own)
        own_sets = (("goemotions_test", "text", "test"), ("ravdess_test", "audio", "test"), ("fer_test", "vision", "test"),
                    ("goemotions_valid", "text", "valid"), ("ravdess_valid", "audio", "valid"),
                    ("fer_valid", "vision", "valid"))
        for split, modality, source in own_sets:
            if own_text and modality == "text":  # starter-zh's text head is scored on EmotionTalk's val transcripts
                continue
            pool = feats[modality][source]
            for i in tqdm(range(len(pool["labels"])), desc=split, disable=args.no_progress):
                x = pool["features"][i]
                if modality == "vision":  # the face alone, no jitter: the encoder's own test
                    x = vision_sequence(x, VISION_FRAMES, rng)
                inputs = {**zeros, modality: x}
                labels = [-1, -1, -1, -1]
                labels[("text", "audio", "vision").index(modality)] = int(pool["labels"][i])
                writer.add(split, f"{split}-{i:05d}", inputs["text"], inputs["audio"], inputs["vision"], labels)
            summary["splits"][split] = {"samples": int(len(pool["labels"])), "modality": modality}
    summary["seconds"] = round(time.perf_counter() - started, 1)
    (args.out / "composite.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
