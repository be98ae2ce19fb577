#!/usr/bin/env python
"""Train the starter-zh text encoder: a character-level BERT, pre-trained as a masked language model on
EmotionTalk's train transcripts, then fine-tuned with an emotion head on their text labels.

    python scripts/train_starter_zh_text.py                      # all stages -> runs/starter-zh/text
    python scripts/train_starter_zh_text.py --resume             # continue an interrupted run where it stopped
    python scripts/train_starter_zh_text.py --init scratch --out runs/starter-zh/text-scratch   # without MLM

Data (``--data``, EmotionTalk's csv in ../shared/data): the train split only, cut by recording group
(``edge.starter.composite.holdout_groups``, seeded: whole groups of actors in dialogue, as EmotionTalk's own val
split is cut) into *fit* (vocabulary, pre-training, fine-tuning) and *select* (model selection: pre-training loss,
fine-tuning epoch).  EmotionTalk's val split is scored once, by the selected model, at the end.

Stages (each resumable from ``OUT/<stage>.state.safetensors``, written atomically after every epoch):
1. vocabulary: the fit transcripts' characters (cleaned, see ``edge.starter.zh_text``) -> ``OUT/tokenizer.json``;
2. pretrain: ``BertForMaskedLM`` on the fit transcripts (15 % of the characters masked, punctuation dropped from
   ``--punct-drop`` of the texts);
3. finetune: the pre-trained BERT + ``TextEmotionHead`` on the text labels (cross-entropy weighted by the square
   root of inverse class frequency, label smoothing), the epoch with the best select weighted F1 kept;
4. report: val weighted / macro F1 and accuracy, next to the majority class, with and without punctuation; the
   report files in ``OUT/eval``;
5. export: ``OUT/text_encoder.onnx`` (parity checked against PyTorch) and the head through it on val, the CPU
   cost per utterance (ONNX Runtime, batch 1: warm-up, repetitions, p50 / p95) and a dynamic INT8 copy measured.
``OUT/train.json`` gathers every figure; ``OUT/log.txt`` keeps the run's log.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
log = logging.getLogger("edge")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "emotiontalk" / "emotiontalk.csv")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "starter-zh" / "text")
    p.add_argument("--resume", action="store_true", help="continue from OUT's saved states")
    p.add_argument("--init", choices=("mlm", "scratch"), default="mlm", help="fine-tune the pre-trained or a random BERT")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--ff", type=int, default=512)
    p.add_argument("--tokens", type=int, default=64, help="ids per utterance: [CLS] + characters + [SEP]")
    p.add_argument("--min-count", type=int, default=2, help="characters seen fewer times are [UNK]")
    p.add_argument("--holdout", type=float, default=0.1, help="fraction of the train split held out by group")
    p.add_argument("--pretrain-epochs", type=int, default=6)
    p.add_argument("--pretrain-lr", type=float, default=1e-3)
    p.add_argument("--finetune-epochs", type=int, default=5)
    p.add_argument("--finetune-lr", type=float, default=3e-4)
    p.add_argument("--head-lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--punct-drop", type=float, default=0.3, help="fraction of training texts without punctuation")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch / ONNX Runtime threads (1: on a busy 2-core machine two threads spent 10x the CPU time)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------------------- data


def load_data(args) -> dict:
    """{"fit" | "select" | "val": (texts, text labels)} and the held-out groups."""
    from edge.starter.composite import holdout_groups, read_emotiontalk
    from edge.starter.zh_text import clean_transcript

    table = read_emotiontalk(args.data)
    held = set(holdout_groups(table["train"], args.holdout, args.seed))
    parts = {"fit": [r for r in table["train"] if r.group not in held],
             "select": [r for r in table["train"] if r.group in held], "val": table["val"]}
    data = {k: ([clean_transcript(r.text) for r in rows], np.array([r.labels[0] for r in rows], np.int64))
            for k, rows in parts.items()}
    return {"parts": data, "held_out_groups": sorted(held)}


def tokenize(tokenizer, texts, length: int) -> tuple[np.ndarray, np.ndarray]:
    from edge.features.text_pre import encode_texts

    feeds = encode_texts(tokenizer, texts, length=length)
    return feeds["input_ids"], feeds["attention_mask"]


class Batches:
    """Texts tokenised with and without punctuation; batches of similar length, cut to their longest text."""

    def __init__(self, tokenizer, texts, labels, *, length: int, punct_drop: float) -> None:
        from edge.starter.zh_text import strip_punctuation

        self.ids, self.mask = tokenize(tokenizer, texts, length)
        self.bare_ids, self.bare_mask = tokenize(tokenizer, [strip_punctuation(t) for t in texts], length)
        self.labels = np.asarray(labels, np.int64)
        self.punct_drop = punct_drop

    def __len__(self) -> int:
        return len(self.labels)

    def epoch(self, rng: np.random.Generator, batch: int):
        bare = rng.random(len(self)) < self.punct_drop
        ids = np.where(bare[:, None], self.bare_ids, self.ids)
        mask = np.where(bare[:, None], self.bare_mask, self.mask)
        # shuffle, then sort within chunks of 50 batches by length: little padding, random batches
        order = rng.permutation(len(self))
        chunk = 50 * batch
        lengths = mask.sum(1)
        order = np.concatenate([c[np.argsort(lengths[c], kind="stable")] for c in np.split(order, range(chunk, len(order), chunk))])
        groups = [order[i:i + batch] for i in range(0, len(order), batch)]
        for g in (groups[i] for i in rng.permutation(len(groups))):
            cut = int(lengths[g].max())
            yield ids[g, :cut], mask[g, :cut], self.labels[g]


def ordered(ids: np.ndarray, mask: np.ndarray, batch: int = 256):
    """Deterministic batches over all rows in length order (evaluation): (rows, ids, mask)."""
    lengths = mask.sum(1)
    order = np.argsort(-lengths, kind="stable")
    for i in range(0, len(order), batch):
        rows = order[i:i + batch]
        cut = int(lengths[rows].max())
        yield rows, ids[rows, :cut], mask[rows, :cut]


# ------------------------------------------------------------------------------------------------------ stages


def schedule(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def run_epochs(name: str, model, params, epochs: int, lr, train_step, evaluate, args, *, steps_per_epoch: int):
    """The shared loop of both stages: AdamW, warm-up then cosine, one state file (resumable), one record per
    epoch.  ``lr`` is a learning rate or a list (one per parameter group)."""
    import torch
    from tqdm import tqdm

    from edge.train.resume import load_train_state, save_train_state

    groups = params if isinstance(params[0], dict) else [{"params": params, "lr": lr}]
    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    base = [g["lr"] for g in opt.param_groups]
    total = epochs * steps_per_epoch
    state_path = args.out / f"{name}.state.safetensors"
    history, start, step = [], 0, 0
    rng = np.random.default_rng(args.seed + (1 if name == "pretrain" else 2))
    gen = torch.Generator().manual_seed(args.seed)
    if args.resume and state_path.is_file():
        state = load_train_state(state_path)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        history, start, step = state["history"], int(state["epoch"]), int(state["step"])
        rng = np.random.default_rng([args.seed, start])
        gen.manual_seed(args.seed + 1000 * start)
        log.info("%s: resumed after epoch %d", name, start)
    for epoch in range(start, epochs):
        model.train()
        losses = []
        for ids, mask, labels in tqdm(train_step.batches(rng), total=steps_per_epoch, desc=f"{name} {epoch + 1}/{epochs}",
                                      leave=False, disable=args.no_progress):
            for g, b in zip(opt.param_groups, base):
                g["lr"] = b * schedule(step, total, max(1, total // 20))
            loss = train_step(ids, mask, labels, gen)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            step += 1
        record = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), **evaluate()}
        history.append(record)
        log.info("%s epoch %d: %s", name, epoch + 1, json.dumps({k: round(v, 4) for k, v in record.items()}))
        weights = {k: v.clone() for k, v in model.state_dict().items()}  # tied embeddings: one copy each
        save_train_state(state_path, {"model": weights, "optimizer": opt.state_dict(), "history": history,
                                      "epoch": epoch + 1, "step": step})
        if train_step.on_epoch(record, model):
            log.info("%s: best so far", name)
    return history


class MLMStep:
    def __init__(self, model, batches: Batches, config, batch: int) -> None:
        self.model, self.data, self.config, self.batch = model, batches, config, batch

    def batches(self, rng):
        return self.data.epoch(rng, self.batch)

    def __call__(self, ids, mask, labels, gen):
        import torch

        from edge.starter.zh_model import mask_tokens

        ids, mask = torch.from_numpy(ids), torch.from_numpy(mask)
        inputs, targets = mask_tokens(ids, mask, vocab_size=self.config.vocab_size, generator=gen)
        return masked_loss(self.model, inputs, mask, targets)

    def on_epoch(self, record, model) -> bool:
        return False


def masked_loss(model, inputs, mask, targets, reduction: str = "mean"):
    """Cross-entropy of the masked positions only (the vocabulary projection runs on those, not on every position:
    a fifth of BertForMaskedLM's cost at this size); also returns the logits with ``reduction="none"``."""
    import torch

    hidden = model.bert(input_ids=inputs, attention_mask=mask).last_hidden_state
    keep = targets != -100
    logits = model.cls(hidden[keep])
    loss = torch.nn.functional.cross_entropy(logits, targets[keep], reduction="sum" if reduction == "none" else reduction)
    return (loss, logits, targets[keep]) if reduction == "none" else loss


def mlm_eval(model, ids, mask, vocab_size: int) -> dict:
    """Masked-LM loss and accuracy on fixed masks (seeded), over ``ids``."""
    import torch

    from edge.starter.zh_model import mask_tokens

    model.eval()
    gen = torch.Generator().manual_seed(12345)
    loss_sum, right, n = 0.0, 0, 0
    with torch.inference_mode():
        for _, i, m in ordered(ids, mask):
            i, m = torch.from_numpy(i), torch.from_numpy(m)
            inputs, targets = mask_tokens(i, m, vocab_size=vocab_size, generator=gen)
            loss, logits, wanted = masked_loss(model, inputs, m, targets, reduction="none")
            loss_sum += loss.item()
            right += int((logits.argmax(-1) == wanted).sum())
            n += int(wanted.numel())
    return {"select_mlm_loss": loss_sum / max(1, n), "select_mlm_accuracy": right / max(1, n)}


class FinetuneStep:
    def __init__(self, model, batches: Batches, batch: int, weights, smoothing: float, out: Path) -> None:
        import torch

        self.model, self.data, self.batch, self.out = model, batches, batch, out
        self.loss = torch.nn.CrossEntropyLoss(weight=torch.from_numpy(weights), label_smoothing=smoothing)

    def batches(self, rng):
        return self.data.epoch(rng, self.batch)

    def __call__(self, ids, mask, labels, gen):
        import torch

        return self.loss(self.model(torch.from_numpy(ids), torch.from_numpy(mask)), torch.from_numpy(labels))

    def on_epoch(self, record, model) -> bool:
        from edge.fileio import write_text_atomic
        from edge.starter.zh_model import save_classifier

        best = self.out / "best.json"  # survives a resume: the best epoch so far, whichever run found it
        previous = json.loads(best.read_text())["select_weighted_f1"] if best.is_file() else -1.0
        if record["select_weighted_f1"] <= previous:
            return False
        save_classifier(model, self.out / "classifier.safetensors", meta=record)
        write_text_atomic(best, json.dumps(record) + "\n")
        return True


def predict(model, ids, mask) -> np.ndarray:
    import torch

    model.eval()
    out = np.zeros((len(ids), 7), np.float32)
    with torch.inference_mode():
        for rows, i, m in ordered(ids, mask):
            out[rows] = model(torch.from_numpy(i), torch.from_numpy(m)).numpy()
    return out


def scores(labels, logits) -> dict:
    from edge.labels import CLASSES
    from edge.train.metrics import classification_metrics

    return classification_metrics(labels, logits.argmax(1), CLASSES)


def sqrt_inverse_weights(labels: np.ndarray) -> np.ndarray:
    """Class weights 1 / sqrt(frequency), mean 1 over the classes present: between plain and balanced loss (the
    target is weighted F1, which rewards the frequent classes, but the rare ones must not vanish)."""
    counts = np.bincount(labels, minlength=7).astype(np.float64)
    w = np.divide(1.0, np.sqrt(counts), out=np.zeros_like(counts), where=counts > 0)
    return (w / w[counts > 0].mean()).astype(np.float32)


# ------------------------------------------------------------------------------------------------------ export


def cost_per_utterance(path: Path, feeds: dict, threads: int, repeats: int = 200) -> dict:
    """ONNX Runtime CPU latency of one utterance (batch 1, the profile's fixed length): warm-up, then p50 / p95."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    one = {k: v[:1] for k, v in feeds.items()}
    for _ in range(20):
        session.run(["hidden"], one)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        session.run(["hidden"], one)
        times.append(1000 * (time.perf_counter() - t))
    return {"threads": threads, "repeats": repeats, "p50_ms": float(np.percentile(times, 50)),
            "p95_ms": float(np.percentile(times, 95)), "min_ms": float(np.min(times))}


def export(model, tokenizer, parts, args) -> dict:
    """The BERT to ONNX (parity checked), the head over ONNX Runtime's features on val, cost, dynamic INT8."""
    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edge.build.export import export_text_encoder
    from edge.features.text_pre import encode_texts

    onnx_path = args.out / "text_encoder.onnx"
    report = export_text_encoder(model.bert, onnx_path, length=args.tokens)
    texts, labels = parts["val"]
    feeds = encode_texts(tokenizer, texts, length=args.tokens)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    int8_path = args.out / "text_encoder.int8.onnx"
    quantize_dynamic(str(onnx_path), str(int8_path), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul"])
    info = {"fp32": report.to_dict(), "size_bytes": onnx_path.stat().st_size}
    outs = {}
    for kind, path in (("fp32", onnx_path), ("int8", int8_path)):
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        hidden = np.concatenate([session.run(["hidden"], {k: v[i:i + 128] for k, v in feeds.items()})[0]
                                 for i in range(0, len(labels), 128)])
        outs[kind] = hidden * feeds["attention_mask"][..., None]  # zero past [SEP], as the run path does
        with torch.inference_mode():
            logits = model.head(torch.from_numpy(outs[kind]), torch.from_numpy(feeds["attention_mask"])).numpy()
        overall = scores(labels, logits)["overall"]
        info[f"val_through_onnx_{kind}"] = {k: overall[k] for k in ("weighted_f1", "macro_f1", "accuracy")}
        info[f"cost_{kind}_1thread"] = cost_per_utterance(path, feeds, 1)
    real = feeds["attention_mask"].astype(bool)
    a, b = outs["fp32"][real], outs["int8"][real]
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)
    info["int8"] = {"size_bytes": int8_path.stat().st_size, "token_cosine_mean": float(cos.mean()),
                    "token_cosine_min": float(cos.min()), "quantization": "quantize_dynamic MatMul, QInt8, per channel"}
    return info


# --------------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stderr), logging.FileHandler(args.out / "log.txt")])
    import torch

    from edge.labels import CLASSES
    from edge.fileio import write_text_atomic
    from edge.starter.zh_model import CharBertClassifier, CharBertConfig, char_bert, load_classifier
    from edge.starter.zh_text import build_char_tokenizer, char_vocabulary, load_char_tokenizer, strip_punctuation
    from edge.train.reports import write_eval_report

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if not args.resume:
        for stale in ("pretrain.state.safetensors", "finetune.state.safetensors", "best.json", "pretrained.safetensors"):
            (args.out / stale).unlink(missing_ok=True)
    started = time.perf_counter()
    command = "python scripts/train_starter_zh_text.py " + " ".join(sys.argv[1:] if argv is None else argv)
    data = load_data(args)
    parts = data["parts"]
    log.info("held-out groups %s; sizes %s", data["held_out_groups"], {k: len(v[1]) for k, v in parts.items()})

    # 1. vocabulary
    tok_path = args.out / "tokenizer.json"
    if not (args.resume and tok_path.is_file()):
        tokenizer = build_char_tokenizer(char_vocabulary(parts["fit"][0], min_count=args.min_count))
        tokenizer.save(str(tok_path))
    tokenizer = load_char_tokenizer(tok_path)
    config = CharBertConfig(vocab_size=tokenizer.get_vocab_size(), hidden=args.hidden, layers=args.layers,
                            heads=args.heads, ff=args.ff, tokens=args.tokens)
    log.info("vocabulary: %d ids; encoder %s", config.vocab_size, config)
    fit = Batches(tokenizer, *parts["fit"], length=args.tokens, punct_drop=args.punct_drop)
    select_ids, select_mask = tokenize(tokenizer, parts["select"][0], args.tokens)
    steps = math.ceil(len(fit) / args.batch)

    # 2. pre-training
    pre_history = []
    pretrained = args.out / "pretrained.safetensors"
    if args.init == "mlm":
        mlm = char_bert(config, masked_lm=True)
        if not (args.resume and pretrained.is_file()):
            step = MLMStep(mlm, fit, config, args.batch)
            pre_history = run_epochs("pretrain", mlm, list(mlm.parameters()), args.pretrain_epochs, args.pretrain_lr,
                                     step, lambda: mlm_eval(mlm, select_ids, select_mask, config.vocab_size), args,
                                     steps_per_epoch=steps)
            from edge.model.checkpoint import save_checkpoint

            save_checkpoint(pretrained, mlm.bert.state_dict(), config.to_dict(), variant="starter-zh-char-bert",
                            meta={"history": pre_history})
    # 3. fine-tuning
    model = CharBertClassifier(config)
    if args.init == "mlm":
        from edge.model.checkpoint import load_checkpoint

        missing, unexpected = model.bert.load_state_dict(load_checkpoint(pretrained).state, strict=False)
        if unexpected or any(not k.startswith("pooler") for k in missing):
            raise SystemExit(f"pre-trained weights do not fit: missing {missing}, unexpected {unexpected}")
    select_labels = parts["select"][1]

    def evaluate():
        s = scores(select_labels, predict(model, select_ids, select_mask))["overall"]
        return {"select_weighted_f1": s["weighted_f1"], "select_macro_f1": s["macro_f1"], "select_accuracy": s["accuracy"]}

    params = [{"params": list(model.bert.parameters()), "lr": args.finetune_lr},
              {"params": list(model.head.parameters()), "lr": args.head_lr}]
    step = FinetuneStep(model, fit, args.batch, sqrt_inverse_weights(parts["fit"][1]), args.label_smoothing, args.out)
    fine_history = run_epochs("finetune", model, params, args.finetune_epochs, None, step, evaluate, args,
                              steps_per_epoch=steps)

    # 4. the selected model, scored once on val
    best = load_classifier(args.out / "classifier.safetensors")
    val_texts, val_labels = parts["val"]
    report = {}
    for name, texts in (("val", val_texts), ("val_no_punctuation", [strip_punctuation(t) for t in val_texts])):
        ids, mask = tokenize(tokenizer, texts, args.tokens)
        logits = predict(best, ids, mask)
        report[name] = scores(val_labels, logits)
        if name == "val":
            markdown = write_eval_report({"t": (val_labels, logits.argmax(1))}, CLASSES, args.out / "eval",
                                         title="starter-zh text encoder + head, EmotionTalk val (text labels)")
    majority = int(np.bincount(parts["fit"][1], minlength=7).argmax())
    report["majority_class"] = scores(val_labels, np.eye(7)[np.full(len(val_labels), majority)])
    print(markdown)

    # 5. export
    exported = export(best, tokenizer, parts, args)
    summary = {
        "command": command.strip(), "seed": args.seed, "encoder": config.to_dict(), "init": args.init,
        "held_out_groups": data["held_out_groups"], "sizes": {k: len(v[1]) for k, v in parts.items()},
        "pretrain_history": pre_history or (json.loads((args.out / "pretrained.json").read_text())["meta"]["history"]
                                            if (args.out / "pretrained.json").is_file() else []),
        "finetune_history": fine_history, "selected": json.loads((args.out / "best.json").read_text()),
        **{k: v["overall"] for k, v in report.items()},
        "val_per_class_f1": {c: report["val"]["per_class"][c]["f1"] for c in CLASSES},
        "export": exported, "seconds": round(time.perf_counter() - started, 1),
    }
    write_text_atomic(args.out / "train.json", json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: summary[k] for k in ("selected", "val", "val_no_punctuation", "majority_class")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
