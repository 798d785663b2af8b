"""TFX Trainer module: `run_fn` trains the MobileNetV2 SSDLite detector and exports it.

Trainer loads `run_fn` by name (pipeline/pipeline.py). Settings arrive in `custom_config`
(components/training_config.py) and, per run, in `hyperparameters` (RunParameters); the input
size and the classes come from the Transform output, so they cannot disagree with the data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from typing import Dict, List

import tensorflow as tf
import tensorflow_transform as tft

from litedet.components import features as f
from litedet.components.detection import export, input_pipeline, losses
from litedet.components.detection import model as model_lib
from litedet.components.training_config import TrainingConfig, tuned_values
from litedet.components.transform_module import LABEL_VOCABULARY


def class_names(tf_transform_output) -> List[str]:
    """Names of labels 1..C, from the vocabulary Transform wrote of the training split's
    "label:name" pairs. A label missing from the training data still gets its slot."""
    pairs = {}
    for entry in tf_transform_output.vocabulary_by_name(LABEL_VOCABULARY):
        label, name = entry.decode().split(":", 1)
        pairs[int(label)] = name
    if not pairs:
        raise ValueError("the training split has no labelled object: nothing to learn")
    return [pairs.get(label, f"class_{label}") for label in range(1, max(pairs) + 1)]


def strategy_for(name: str) -> tf.distribute.Strategy:
    """One device by default; MirroredStrategy over several GPUs; MultiWorkerMirroredStrategy
    when TF_CONFIG describes several workers (a Trainer run as a multi-worker job)."""
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    if name == "multi_worker" or (name == "auto" and workers > 1):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "mirrored" or (name == "auto" and len(tf.config.list_logical_devices("GPU")) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief() -> bool:
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = tf_config.get("task")
    if not task:
        return True
    if "chief" in tf_config.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type") == "worker" and task.get("index", 0) == 0


class DetectorTrainer(tf.keras.Model):
    """Wraps the detector with the detection loss so that Keras' fit() drives training:
    callbacks (TensorBoard, BackupAndRestore) and distribution strategies come for free."""

    def __init__(self, detector: tf.keras.Model):
        super().__init__()
        self.detector = detector
        self.trackers = {
            name: tf.keras.metrics.Mean(name=name)
            for name in ("loss", "class_loss", "box_loss", "num_positives")
        }

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, images, training=False):
        return self.detector(images, training=training)

    def _detection_losses(self, images, targets, training: bool) -> Dict[str, tf.Tensor]:
        outputs = self.detector(images, training=training)
        return losses.detection_loss(
            outputs["box_encodings"],
            outputs["class_logits"],
            targets["box_targets"],
            targets["class_targets"],
            targets["box_weights"],
            targets["class_weights"],
        )

    def _record(self, result):
        self.trackers["loss"].update_state(result["total_loss"])
        self.trackers["class_loss"].update_state(result["class_loss"])
        self.trackers["box_loss"].update_state(result["box_loss"])
        self.trackers["num_positives"].update_state(result["num_positives"])
        return {name: t.result() for name, t in self.trackers.items()}

    # Not converted by autograph: the steps have no data-dependent Python control flow, and
    # converting Keras' and the optimizer's internals tripled the first step's tracing time
    # (44 s -> 17 s without, MobileNetV2 0.35 at 256 px on 2 cores; docs/benchmarks.md).
    @tf.autograph.experimental.do_not_convert
    def train_step(self, data):
        images, targets = data
        with tf.GradientTape() as tape:
            result = self._detection_losses(images, targets, training=True)
            # Gradients are summed over replicas: scale so the step is the global mean.
            loss = result["total_loss"] / tf.distribute.get_strategy().num_replicas_in_sync
        variables = self.detector.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return self._record(result)

    @tf.autograph.experimental.do_not_convert
    def test_step(self, data):
        images, targets = data
        return self._record(self._detection_losses(images, targets, training=False))


def _learning_rate(peak: float, steps: int, warmup: int):
    return tf.keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else peak,
        decay_steps=max(1, steps - warmup),
        warmup_target=peak if warmup else None,
        warmup_steps=warmup,
    )


def _resume_dir(
    model_run_dir: str, settings: TrainingConfig, train_files: List[str], total_steps: int
) -> str:
    """A folder that outlives one Trainer execution: a retried run of the same training (same
    data and settings) finds the last checkpoint there and resumes instead of starting over."""
    key = hashlib.sha256(
        json.dumps([train_files, vars(settings), total_steps], sort_keys=True).encode()
    ).hexdigest()[:16]
    return os.path.join(os.path.dirname(os.path.dirname(model_run_dir.rstrip("/"))), "resume", key)


def _fit_phase(
    trainer,
    phase: str,
    learning_rate,
    first_epoch: int,
    last_epoch: int,
    steps_per_epoch: int,
    train_data,
    eval_data,
    eval_steps,
    run_dir,
    resume_dir,
):
    """One fit() over epochs [first_epoch, last_epoch), resumable; a finished phase leaves a
    marker and its weights so a restarted training skips it."""
    done_marker = os.path.join(resume_dir, f"{phase}.done")
    weights = os.path.join(resume_dir, f"{phase}.weights")
    if tf.io.gfile.exists(done_marker):
        logging.info("Training phase %s already finished: loading its weights", phase)
        trainer.detector.load_weights(weights)
        return
    # Keras 2's legacy Adam: one fused update op per variable. The newer optimizer builds its
    # update from several ops per variable in Python, which doubled the first step's tracing
    # (13 s -> 6 s here for MobileNetV2 0.35 at 256 px) at the same step time.
    trainer.compile(optimizer=tf.keras.optimizers.legacy.Adam(learning_rate))
    trainer.fit(
        train_data,
        initial_epoch=first_epoch,
        epochs=last_epoch,
        steps_per_epoch=steps_per_epoch,
        validation_data=eval_data,
        validation_steps=eval_steps or None,
        verbose=2,
        callbacks=[
            tf.keras.callbacks.TensorBoard(log_dir=run_dir, update_freq="epoch"),
            tf.keras.callbacks.BackupAndRestore(os.path.join(resume_dir, phase)),
        ],
    )
    trainer.detector.save_weights(weights)
    with tf.io.gfile.GFile(done_marker, "w") as marker:
        marker.write("done\n")


def run_fn(fn_args) -> None:
    """TFX Trainer entry point."""
    settings = TrainingConfig.from_custom_config(
        fn_args.custom_config, getattr(fn_args, "hyperparameters", None)
    )
    # First of all: MultiWorkerMirroredStrategy must configure collective ops before any
    # TensorFlow op runs in this process.
    strategy = strategy_for(settings.distribution)
    transform_output = tft.TFTransformOutput(fn_args.transform_output)
    image_size = int(transform_output.transformed_feature_spec()[f.IMAGE].shape[0])
    names = class_names(transform_output)
    config = model_lib.DetectorConfig(
        num_classes=len(names),
        alpha=settings.alpha,
        image_size=image_size,
        feature_pyramid=settings.feature_pyramid,
        head_channels=settings.head_channels,
        head_depth=settings.head_depth,
    )
    # TrainArgs holds the compiled step count; RunParameters may override it.
    total_steps = int(
        tuned_values(getattr(fn_args, "hyperparameters", None)).get(
            "train_steps", fn_args.train_steps
        )
    )
    logging.info(
        "Training MobileNetV2 SSDLite alpha=%s at %d px, %d classes (%s), %d steps",
        settings.alpha,
        image_size,
        len(names),
        ", ".join(names),
        total_steps,
    )
    anchors = config.anchors()
    with strategy.scope():
        detector = model_lib.build_detector(config, settings.backbone_weights or None)
        trainer = DetectorTrainer(detector)

    # Transform's custom_config says whether `examples` are its materialized output or raw.
    materialized = bool(fn_args.custom_config.get("materialized_examples", False))
    train_data = input_pipeline.make_dataset(
        fn_args.train_files,
        transform_output,
        anchors,
        settings.batch_size,
        training=True,
        materialized=materialized,
        augmentation=settings.augment,
    )
    eval_data = input_pipeline.make_dataset(
        fn_args.eval_files,
        transform_output,
        anchors,
        settings.batch_size,
        training=False,
        materialized=materialized,
    )
    steps_per_epoch = min(settings.checkpoint_every_steps, total_steps)
    epochs = math.ceil(total_steps / steps_per_epoch)
    freeze_epochs = math.ceil(settings.freeze_backbone_steps / steps_per_epoch)
    resume_dir = _resume_dir(
        fn_args.model_run_dir, settings, list(fn_args.train_files), total_steps
    )
    eval_steps = fn_args.eval_steps or settings.eval_steps
    warmup = min(settings.warmup_steps, total_steps // 2)

    if freeze_epochs:
        model_lib.set_backbone_trainable(detector, False)
        _fit_phase(
            trainer,
            "frozen",
            _learning_rate(settings.learning_rate, freeze_epochs * steps_per_epoch, warmup),
            0,
            freeze_epochs,
            steps_per_epoch,
            train_data,
            eval_data,
            eval_steps,
            fn_args.model_run_dir,
            resume_dir,
        )
        model_lib.set_backbone_trainable(detector, True)
    rest = (epochs - freeze_epochs) * steps_per_epoch
    peak = settings.learning_rate * (
        settings.fine_tune_learning_rate_factor if freeze_epochs else 1.0
    )
    _fit_phase(
        trainer,
        "full",
        _learning_rate(peak, rest, 0 if freeze_epochs else warmup),
        freeze_epochs,
        epochs,
        steps_per_epoch,
        train_data,
        eval_data,
        eval_steps,
        fn_args.model_run_dir,
        resume_dir,
    )

    module = export.DetectorExport(
        detector,
        transform_output,
        anchors,
        image_size,
        settings.score_threshold,
        settings.nms_iou_threshold,
        settings.max_detections,
    )
    # Every worker must take part in saving under MultiWorkerMirroredStrategy; only the chief's
    # copy is the model.
    target = (
        fn_args.serving_model_dir
        if is_chief()
        else os.path.join(fn_args.model_run_dir, "worker_export")
    )
    export.save(module, target)
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, "training.json"), "w") as out:
        out.write(
            json.dumps(
                {"classes": names, "image_size": image_size, "settings": vars(settings)}, indent=2
            )
        )
