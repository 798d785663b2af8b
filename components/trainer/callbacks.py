"""What the training loop shows and keeps: validation mAP, the best checkpoint, progress.

- ValidationMap: at the end of every epoch (`checkpoint_every_steps` steps), COCO mAP@0.5 and
  mAP@[.5:.95] of the detector in inference mode on the evaluation split (pycocotools, the
  gate's scorer; boxes in the model's input frame, where IoU is the same as in the image's);
  the figures go into the epoch's logs (so TensorBoard and the progress lines show them). The
  weights of the best epoch so far (by mAP@[.5:.95]) are kept, and the Trainer exports those,
  not the last ones; with a patience, training stops after that many evaluations without
  improvement. Its state survives a killed and resumed training.
- ProgressLine: step/total, loss, images/s and ETA, one refreshing line on a terminal, a plain
  line every `log_every_steps` steps in a log (a Kubeflow step's, the local log file).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from typing import Callable, Dict, Iterable, Optional

import numpy as np
import tensorflow as tf

from litedet.components import features as f
from litedet.components.detection import postprocess
from litedet.components.evaluation import coco

BEST_WEIGHTS = "best.weights"
BEST_STATE = "best.json"


class ValidationMap(tf.keras.callbacks.Callback):
    def __init__(
        self,
        detector: tf.keras.Model,
        eval_batches: Callable[[], Iterable[Dict[str, tf.Tensor]]],
        anchors: tf.Tensor,
        num_classes: int,
        state_dir: str,
        steps_per_epoch: int,
        nms: Optional[dict] = None,
        patience: int = 0,
    ):
        super().__init__()
        self.detector = detector
        self.eval_batches = eval_batches
        self.num_classes = num_classes
        self.steps_per_epoch = steps_per_epoch
        self.patience = patience
        self.best_path = os.path.join(state_dir, BEST_WEIGHTS)
        self.state_path = os.path.join(state_dir, BEST_STATE)
        self.state = {
            "map": -1.0,
            "map50": 0.0,
            "step": 0,
            "since_best": 0,
            "history": [],
            "seconds": 0.0,
        }
        if tf.io.gfile.exists(self.state_path):  # a resumed training keeps what it had
            with tf.io.gfile.GFile(self.state_path) as handle:
                self.state.update(json.load(handle))
        settings = dict(nms or {})

        @tf.function(autograph=False)
        def detect(images):
            outputs = detector(images, training=False)
            return postprocess.decode_detections(
                outputs["box_encodings"], outputs["class_logits"], anchors, **settings
            )

        self._detect = detect

    def evaluate(self) -> Dict[str, float]:
        truth, found = [], []
        for batch in self.eval_batches():
            detections = {k: v.numpy() for k, v in self._detect(batch[f.IMAGE]).items()}
            boxes, classes = batch[f.BOXES].numpy(), batch[f.CLASSES].numpy()
            ignore, counts = batch[f.IGNORE].numpy(), batch[f.NUM_BOXES].numpy()
            for i in range(len(boxes)):
                keep = np.arange(len(boxes[i])) < int(counts[i])
                keep &= ignore[i] == 0  # crowd and difficult objects: as the gate leaves them out
                truth.append({"boxes": boxes[i][keep], "classes": classes[i][keep]})
                n = int(detections["num_detections"][i])
                found.append(
                    {
                        "boxes": detections["detection_boxes"][i][:n],
                        "classes": detections["detection_classes"][i][:n],
                        "scores": detections["detection_scores"][i][:n],
                    }
                )
        scores = coco.coco_map(truth, found, self.num_classes)
        return {"map": scores["map"], "map50": scores["map50"]}

    def on_train_begin(self, logs=None):
        # Wall-clock training time, across phases and resumed runs: the learning curves' x-axis.
        self._resumed_at, self._clock = self.state["seconds"], time.time()

    def on_epoch_end(self, epoch, logs=None):
        step = (epoch + 1) * self.steps_per_epoch
        started = time.time()
        self.state["seconds"] = self._resumed_at + started - self._clock
        scores = self.evaluate()
        if logs is not None:
            logs["val_map"], logs["val_map50"] = scores["map"], scores["map50"]
        improved = scores["map"] > self.state["map"]
        if improved:
            self.detector.save_weights(self.best_path)
            self.state.update(map=scores["map"], map50=scores["map50"], step=step, since_best=0)
        else:
            self.state["since_best"] += 1
        self.state["history"].append(
            {"step": step, "seconds": round(self.state["seconds"], 1), **scores}
        )
        with tf.io.gfile.GFile(self.state_path, "w") as handle:
            handle.write(json.dumps(self.state))
        logging.info(
            "Validation at step %d: mAP@[.5:.95] %.4f, mAP@0.5 %.4f (%.1f s)%s",
            step,
            scores["map"],
            scores["map50"],
            time.time() - started,
            " - the best so far"
            if improved
            else f" - best {self.state['map']:.4f} at step {self.state['step']}",
        )
        if self.patience and self.state["since_best"] >= self.patience:
            logging.info("Early stopping: no better mAP in %d validations", self.patience)
            self.model.stop_training = True

    def restore_best(self) -> Optional[dict]:
        """Loads the best epoch's weights into the detector; returns its figures (None when no
        validation ran)."""
        if self.state["step"] == 0 or not tf.io.gfile.exists(self.best_path + ".index"):
            return None
        self.detector.load_weights(self.best_path)
        return {k: self.state[k] for k in ("map", "map50", "step")}


class ResumeNotice(tf.keras.callbacks.Callback):
    """Says so when BackupAndRestore resumed a killed training from its last checkpoint (its
    first epoch is then later than the phase's first). Runs after BackupAndRestore."""

    def __init__(self, first_epoch: int, steps_per_epoch: int):
        super().__init__()
        self.first_epoch, self.steps_per_epoch = first_epoch, steps_per_epoch
        self._checked = False

    def on_epoch_begin(self, epoch, logs=None):
        if not self._checked and epoch > self.first_epoch:
            logging.info("Resumed from the checkpoint at step %d", epoch * self.steps_per_epoch)
        self._checked = True


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class ProgressLine(tf.keras.callbacks.Callback):
    def __init__(
        self,
        total_steps: int,
        batch_size: int,
        steps_per_epoch: int,
        log_every_steps: int = 50,
        stream=None,
    ):
        super().__init__()
        self.total, self.batch_size = total_steps, batch_size
        self.steps_per_epoch, self.step = steps_per_epoch, 0
        self.log_every = max(1, log_every_steps)
        self.stream = stream or sys.stdout
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self._started, self._steps_timed, self._last_draw = None, 0, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.step = epoch * self.steps_per_epoch  # right after a resume too

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        now = time.time()
        if self._started is None:  # the first step pays for tracing: time from the second
            self._started = now
        else:
            self._steps_timed += 1
        rate = self._steps_timed / (now - self._started) if self._steps_timed else 0.0
        eta = (self.total - self.step) / rate if rate else float("inf")
        loss = (logs or {}).get("loss")
        line = (
            f"step {self.step}/{self.total}  loss {loss:.4f}  "
            f"{rate * self.batch_size:.1f} img/s  ETA {_duration(eta)}"
            if loss is not None
            else f"step {self.step}/{self.total}"
        )
        if self.interactive:
            if now - self._last_draw >= 0.5 or self.step == self.total:
                self.stream.write("\r  " + line.ljust(70))
                self.stream.flush()
                self._last_draw = now
        elif self.step % self.log_every == 0 or self.step == self.total:
            logging.info("Training %s", line)

    def on_epoch_end(self, epoch, logs=None):
        if logs and "val_map" in logs:
            text = (
                f"validation at step {self.step}: mAP@[.5:.95] {logs['val_map']:.4f}, "
                f"mAP@0.5 {logs['val_map50']:.4f}"
            )
            if self.interactive:
                self.stream.write("\r  " + text.ljust(70) + "\n")
                self.stream.flush()
            else:
                logging.info("Training %s", text)

    def on_train_end(self, logs=None):
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()
