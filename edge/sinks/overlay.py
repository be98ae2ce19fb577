"""The overlay window (``--show``): the latest frame with the face box, per-modality bars and the transcript.

:func:`draw_overlay` draws onto an RGB frame and is usable on its own (e.g. to save pictures); the window itself
needs an OpenCV with GUI support (``opencv-python``, not ``-headless``) and a display.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from edge._lazy import lazy_import
from edge.errors import BackendUnavailable
from edge.stream.estimate import Estimate

ROWS = ("fused", "text", "audio", "vision")
COLOURS = {"fused": (255, 255, 255), "text": (120, 200, 255), "audio": (255, 190, 90), "vision": (140, 255, 140)}


def draw_overlay(rgb: np.ndarray, box: tuple[float, float, float, float] | None, estimate: Estimate | None) -> np.ndarray:
    """A copy of ``rgb`` with the face box, one bar per modality (top class and probability) and the transcript."""
    cv2 = lazy_import("cv2", purpose="the overlay window")
    img = np.ascontiguousarray(rgb).copy()
    h, w = img.shape[:2]
    if box is not None:
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(img, (x1, y1), (x2, y2), (0, 255, 0), 2)
    if estimate is None:
        return img
    panel_h = 22 * (len(ROWS) + 1) + 8
    shade = img[:panel_h, : min(w, 330)].astype(np.float32) * 0.35
    img[:panel_h, : min(w, 330)] = shade.astype(np.uint8)
    for i, row in enumerate(ROWS):
        y = 22 * (i + 1)
        probs = estimate.probs.get(row)
        colour = COLOURS[row]
        if probs is None:
            cv2.putText(img, f"{row}: unavailable", (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (160, 160, 160), 1,
                        cv2.LINE_AA)
            continue
        top = int(np.argmax(probs))
        cv2.rectangle(img, (100, y - 12), (100 + int(120 * probs[top]), y), colour, -1)
        cv2.putText(img, f"{row}", (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
        cv2.putText(img, f"{estimate.classes[top]} {probs[top]:.2f}", (228, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    colour, 1, cv2.LINE_AA)
    text = (estimate.transcript or "")[-60:]
    if text:
        cv2.putText(img, text, (8, h - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1, cv2.LINE_AA)
    return img


class OverlayWindow:
    """Shows :func:`draw_overlay` of the latest frame at every estimate; ``q`` or Esc in the window stops."""

    def __init__(self, frame_source: Callable[[], tuple[Any, Any]], *, title: str = "lfmim-edge",
                 on_quit: Callable[[], None] | None = None) -> None:
        self.cv2 = lazy_import("cv2", purpose="the overlay window")
        self.frame_source, self.title, self.on_quit = frame_source, title, on_quit
        try:
            self.cv2.namedWindow(self.title, self.cv2.WINDOW_NORMAL)
        except self.cv2.error as exc:
            raise BackendUnavailable(
                "--show needs an OpenCV with GUI support and a display (pip install opencv-python, not "
                f"opencv-python-headless; on a server, use --jsonl instead): {str(exc).strip().splitlines()[-1]}"
            ) from None

    def __call__(self, estimate: Estimate) -> None:
        frame, box = self.frame_source()
        if frame is None:
            return
        picture = draw_overlay(frame, box, estimate)
        self.cv2.imshow(self.title, self.cv2.cvtColor(picture, self.cv2.COLOR_RGB2BGR))
        if self.cv2.waitKey(1) & 0xFF in (ord("q"), 27) and self.on_quit:
            self.on_quit()

    def close(self) -> None:
        try:
            self.cv2.destroyWindow(self.title)
        except self.cv2.error:
            pass
