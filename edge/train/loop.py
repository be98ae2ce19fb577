"""The training loop: SGD (or AdamW) with the paper's LambdaLR schedule, validation every epoch, the best
checkpoint kept by fused (multi-modal) weighted F1, and resume from the last epoch."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge._lazy import lazy_import
from edge.config import HEADS, MODALITIES, TrainConfig
from edge.errors import DataError
from edge.model.checkpoint import save_checkpoint, load_checkpoint, load_state_into
from edge.train.metrics import classification_metrics
from edge.train.resume import load_train_state, save_train_state

log = logging.getLogger("edge")

BEST = "best.safetensors"
LAST = "last.safetensors"
LAST_STATE = "last.state.safetensors"
HISTORY = "history.jsonl"


@dataclass(frozen=True)
class Prediction:
    """Labels and predictions of one head over a split (rows whose label is -1 are left out)."""

    y_true: np.ndarray
    y_pred: np.ndarray
    probs: np.ndarray
    logits: np.ndarray | None = None


def check_store_matches(store_specs: dict, model_specs: dict, *, store: str) -> None:
    wrong = [
        f"{m} (dim, length) = ({store_specs[m].dim}, {store_specs[m].length}) in the store but the model expects "
        f"({model_specs[m].dim}, {model_specs[m].length})"
        for m in MODALITIES
        if (store_specs[m].dim, store_specs[m].length) != (model_specs[m].dim, model_specs[m].length)
    ]
    if wrong:
        raise DataError(
            f"{store}: features do not fit the model: " + "; ".join(wrong)
            + ". Use a model config with the store's dims and lengths, or extract features for this model"
        )


def batch_tensors(batch: dict[str, np.ndarray], device: str):
    torch = lazy_import("torch")
    feats = [torch.from_numpy(np.ascontiguousarray(batch[m], dtype=np.float32)).to(device) for m in MODALITIES]
    labels = torch.from_numpy(np.asarray(batch["labels"], dtype=np.int64)).to(device)
    return feats, labels


def predict(model, split, *, batch_size: int = 64, device: str = "cpu", progress: bool = False,
            desc: str = "predict", against: str | None = None) -> tuple[dict[str, Prediction], np.ndarray]:
    """Run ``model`` over a store split; returns per-head predictions and the mean per-head losses (4,).

    Each head is scored against its own label, or with ``against`` ("t", "a", "v" or "m") every head against that
    one label (``"m"``: how well each uni-modal head alone predicts the multimodal label, next to the fused head).
    """
    torch = lazy_import("torch")
    from edge.model.lfmim import lfmim_loss
    tqdm = lazy_import("tqdm").tqdm
    model.eval()
    labels_all, logits_all, loss_sum, n = [], [[] for _ in HEADS], np.zeros(4), 0
    with torch.no_grad(), tqdm(total=len(split), desc=desc, unit="sample", disable=not progress, leave=False) as bar:
        for batch in split.iter_batches(batch_size, shuffle=False):
            feats, labels = batch_tensors(batch, device)
            outputs = model(*feats)
            _, losses = lfmim_loss(outputs, labels)
            loss_sum += losses.cpu().numpy() * len(labels)
            n += len(labels)
            labels_all.append(labels.cpu().numpy())
            for i, logits in enumerate(outputs):
                logits_all[i].append(logits.cpu().numpy())
            bar.update(len(labels))
    labels = np.concatenate(labels_all)
    out = {}
    for i, head in enumerate(HEADS):
        logits = np.concatenate(logits_all[i]).astype(np.float64)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        column = i if against is None else HEADS.index(against)
        keep = labels[:, column] >= 0
        out[head] = Prediction(labels[keep, column], probs[keep].argmax(1), probs[keep], logits[keep])
    return out, loss_sum / max(n, 1)


def _lr_lambda(schedule: str, epochs: int):
    if schedule == "lambda":
        return lambda epoch: 1.0 / (epoch + 1)  # the authors' LambdaLR: lr_0 / (epoch + 1), stepped per epoch
    if schedule == "cosine":
        return lambda epoch: 0.5 * (1.0 + math.cos(math.pi * min(epoch, epochs) / epochs))
    return lambda epoch: 1.0


class Trainer:
    """Train one LFMIM model on a feature store.  All outputs go to ``out_dir``."""

    def __init__(self, model, model_variant: str, model_config: dict, train_config: TrainConfig, out_dir: Path,
                 *, device: str = "cpu", progress: bool = True) -> None:
        self.torch = lazy_import("torch", purpose="training")
        self.model = model.to(device)
        self.variant = model_variant
        self.model_config = model_config
        self.tc = train_config
        self.out = Path(out_dir)
        self.device = device
        self.progress = progress
        params = [p for p in model.parameters() if p.requires_grad]
        if train_config.optimizer == "adamw":
            self.optimizer = self.torch.optim.AdamW(params, lr=train_config.lr, weight_decay=train_config.weight_decay)
        else:
            self.optimizer = self.torch.optim.SGD(params, lr=train_config.lr, momentum=train_config.momentum,
                                                  weight_decay=train_config.weight_decay)
        self.scheduler = self.torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _lr_lambda(train_config.schedule, train_config.epochs))
        self.start_epoch = 0
        self.best_f1 = -1.0

    # -- persistence -------------------------------------------------------------------------------------
    def _save(self, name: str, meta: dict[str, Any]) -> None:
        save_checkpoint(self.out / name, self.model.state_dict(), self.model_config, variant=self.variant,
                        meta={**meta, "train_config": self.tc.to_dict()})

    def resume(self) -> None:
        state = load_train_state(self.out / LAST_STATE)
        ckpt = load_checkpoint(self.out / LAST)
        if ckpt.config != self.model_config or ckpt.variant != self.variant:
            raise DataError(f"{self.out / LAST}: the run being resumed used another model config; "
                            "resume with the same options or choose a new --out")
        load_state_into(self.model, ckpt.state, source=str(self.out / LAST))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.torch.set_rng_state(state["rng"])
        self.start_epoch = int(state["epoch"]) + 1
        self.best_f1 = float(state["best_f1"])
        log.info("resumed from epoch %d (best fused F1 so far %.4f)", self.start_epoch, self.best_f1)

    # -- training ------------------------------------------------------------------------------------------
    def _train_epoch(self, split, epoch: int) -> np.ndarray:
        from edge.model.lfmim import lfmim_loss
        tqdm = lazy_import("tqdm").tqdm
        torch = self.torch
        self.model.train()
        loss_sum, n = np.zeros(4), 0
        with tqdm(total=len(split), desc=f"epoch {epoch + 1}/{self.tc.epochs}", unit="sample",
                  disable=not self.progress, leave=False) as bar:
            for batch in split.iter_batches(self.tc.batch_size, shuffle=True, seed=self.tc.seed + epoch):
                feats, labels = batch_tensors(batch, self.device)
                outputs = self.model(*feats)
                loss, losses = lfmim_loss(outputs, labels, self.tc.loss_weights, self.tc.label_mix)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.tc.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.tc.grad_clip)
                self.optimizer.step()
                loss_sum += losses.detach().cpu().numpy() * len(labels)
                n += len(labels)
                bar.update(len(labels))
                bar.set_postfix(loss=f"{loss.item():.3f}")
        return loss_sum / max(n, 1)

    def fit(self, train_split, val_split, classes) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        history_path = self.out / HISTORY
        summary: dict[str, Any] = {}
        for epoch in range(self.start_epoch, self.tc.epochs):
            started = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            train_losses = self._train_epoch(train_split, epoch)
            self.scheduler.step()
            preds, val_losses = predict(self.model, val_split, batch_size=max(self.tc.batch_size, 64),
                                        device=self.device, progress=self.progress, desc="validate")
            metrics = {h: classification_metrics(p.y_true, p.y_pred, classes)["overall"] for h, p in preds.items()
                       if len(p.y_true)}
            fused_f1 = metrics["m"]["weighted_f1"]
            record = {
                "epoch": epoch + 1, "lr": lr, "seconds": round(time.perf_counter() - started, 3),
                "train_loss": dict(zip(HEADS, train_losses.round(5).tolist())),
                "val_loss": dict(zip(HEADS, val_losses.round(5).tolist())),
                "val_accuracy": {h: round(m["accuracy"], 5) for h, m in metrics.items()},
                "val_weighted_f1": {h: round(m["weighted_f1"], 5) for h, m in metrics.items()},
            }
            improved = fused_f1 > self.best_f1
            if improved:
                self.best_f1 = fused_f1
                self._save(BEST, {"epoch": epoch + 1, "val_weighted_f1": record["val_weighted_f1"],
                                  "val_accuracy": record["val_accuracy"]})
            self._save(LAST, {"epoch": epoch + 1})
            save_train_state(self.out / LAST_STATE, {
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "rng": self.torch.get_rng_state(), "epoch": epoch, "best_f1": self.best_f1,
            })
            with open(history_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({**record, "best": improved}) + "\n")
                fh.flush()
            log.info("epoch %d: val acc %s | fused F1 %.4f%s", epoch + 1,
                     " ".join(f"{h}={a:.3f}" for h, a in record["val_accuracy"].items()), fused_f1,
                     " (best)" if improved else "")
            summary = record
        return {"best_fused_weighted_f1": self.best_f1, "last": summary, "out": str(self.out)}


def read_history(out_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(out_dir) / HISTORY
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_history(out_dir: str | Path) -> Path | None:
    """Loss and accuracy curves per head (like the paper's Figure 3) as ``curves.png``; None without matplotlib."""
    from edge.errors import MissingDependency
    from edge.train.reports import new_figure, save_figure_atomic

    history = read_history(out_dir)
    if not history:
        return None
    try:
        fig = new_figure((11, 4))
    except MissingDependency as exc:
        log.warning("no training curves: %s", exc)
        return None
    axes = fig.subplots(1, 2)
    epochs = [r["epoch"] for r in history]
    for head, name in zip(HEADS, ("text", "audio", "vision", "multimodal")):
        axes[0].plot(epochs, [r["train_loss"][head] for r in history], "--", label=f"{name} train")
        axes[0].plot(epochs, [r["val_loss"][head] for r in history], "-", label=f"{name} val")
        if all(head in r["val_accuracy"] for r in history):
            axes[1].plot(epochs, [r["val_accuracy"][head] for r in history], "-o", ms=3, label=name)
    axes[0].set(title="loss per head", xlabel="epoch", ylabel="cross-entropy")
    axes[1].set(title="validation accuracy per head", xlabel="epoch", ylabel="accuracy", ylim=(0, 1))
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure_atomic(fig, Path(out_dir) / "curves.png")
