"""TFX Trainer module: `run_fn` trains the MobileNetV2 SSDLite detector and exports it.

Trainer loads `run_fn` by name (component.py). The `training:` section arrives whole in one
carrier, the `hyperparameters` input RunParameters writes (run-time values merged in); the input
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
from litedet.components.detection import export, input_pipeline, losses, weights
from litedet.components.detection import model as model_lib
from litedet.components.trainer import callbacks as trainer_callbacks
from litedet.components.trainer.config import TrainingConfig
from litedet.components.transform.module import LABEL_VOCABULARY


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

    def __init__(self, detector: tf.keras.Model, anchors=None, giou_weight: float = 0.0):
        super().__init__()
        self.detector = detector
        self.anchors, self.giou_weight = anchors, giou_weight
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
            anchors=self.anchors,
            giou_weight=self.giou_weight,
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


# The backbone's blocks, as MobileNetV2 names its layers: "block_<n>_..." for n in 1..16, then
# "Conv_1". The stem ("Conv1", "bn_Conv1", "expanded_conv_...") is block 0.
def _backbone_block(layer_name: str) -> int:
    if layer_name.startswith("block_"):
        return int(layer_name.split("_")[1])
    return 17 if layer_name.startswith(("Conv_1", "out_relu")) else 0


def configure_backbone(detector, phase: str, settings: TrainingConfig) -> None:
    """ "frozen": the whole backbone frozen (in Keras 2 a frozen BatchNormalization also runs in
    inference mode, so its statistics stay as loaded). "fine_tune": trainable from block
    `settings.fine_tune_from_block` on; its BatchNormalization layers stay frozen unless
    `settings.fine_tune_batchnorm`. Recompile afterwards (_fit_phase does)."""
    backbone = detector.get_layer(model_lib.BACKBONE_NAME)
    backbone.trainable = phase != "frozen"
    if phase == "frozen":
        return
    for layer in backbone.layers:
        trainable = _backbone_block(layer.name) >= settings.fine_tune_from_block
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            trainable = trainable and settings.fine_tune_batchnorm
        layer.trainable = trainable


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as handle:
        digest.update(handle.read())
    return digest.hexdigest()


def _resume_dir(fn_args, settings: TrainingConfig, total_steps: int) -> str:
    """A folder that outlives one Trainer execution: a retried run of the same training finds
    its last checkpoint there and resumes instead of starting over. Its key covers everything
    that shapes the model: the data (the examples' paths, new for every ExampleGen output), the
    Transform graph (input size, resize mode, normalization: its saved_model.pb), the settings,
    the step count, the backbone weights and the code (the module's source fingerprint). It is
    removed once the model is exported, so it can never hand stale weights to a later run."""
    transform_graph = os.path.join(fn_args.transform_output, "transform_fn", "saved_model.pb")
    key = hashlib.sha256(
        json.dumps(
            [
                list(fn_args.train_files),
                _file_digest(transform_graph) if tf.io.gfile.exists(transform_graph) else "",
                vars(settings),
                total_steps,
                (fn_args.custom_config or {}).get("code_fingerprint", ""),
            ],
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    return os.path.join(
        os.path.dirname(os.path.dirname(fn_args.model_run_dir.rstrip("/"))), "resume", key
    )


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
    callbacks,
    resume_dir,
):
    """One fit() over epochs [first_epoch, last_epoch), resumable; a finished phase leaves a
    marker and its weights so a restarted training skips it."""
    done_marker = os.path.join(resume_dir, f"{phase}.done")
    phase_weights = os.path.join(resume_dir, f"{phase}.weights")
    if tf.io.gfile.exists(done_marker):
        logging.info("Training phase %s already finished: loading its weights", phase)
        trainer.detector.load_weights(phase_weights)
        return
    logging.info(
        "Training phase %s: epochs %d-%d of %d steps",
        phase,
        first_epoch + 1,
        last_epoch,
        steps_per_epoch,
    )
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
        verbose=0,  # trainer_callbacks.ProgressLine reports
        callbacks=list(callbacks)
        + [
            tf.keras.callbacks.BackupAndRestore(os.path.join(resume_dir, phase)),
            trainer_callbacks.ResumeNotice(first_epoch, steps_per_epoch),
        ],
    )
    if is_chief():
        trainer.detector.save_weights(phase_weights)
        with tf.io.gfile.GFile(done_marker, "w") as marker:
            marker.write("done\n")
    else:
        # Every worker takes part in saving under MultiWorkerMirroredStrategy; two writing one
        # checkpoint (a TFJob's workers share resume_dir) break each other's shard merge.
        scratch = os.path.join(resume_dir, "workers", _task_name())
        trainer.detector.save_weights(os.path.join(scratch, f"{phase}.weights"))
        tf.io.gfile.rmtree(scratch)


def _datasets(fn_args, transform_output, anchors, settings):
    """(training batches, evaluation batches with anchor targets for the validation loss, a
    callable giving evaluation batches of plain features for the validation mAP)."""
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
    eval_features = input_pipeline.evaluation_batches(
        fn_args.eval_files, transform_output, settings.batch_size, materialized=materialized
    )
    return train_data, eval_data, lambda: eval_features


def _phases(settings: TrainingConfig, total_steps: int, pretrained: bool):
    """[(phase, first epoch, last epoch, learning-rate schedule)] and the steps per epoch."""
    steps_per_epoch = min(settings.checkpoint_every_steps, total_steps)
    epochs = math.ceil(total_steps / steps_per_epoch)
    freeze_epochs = min(epochs - 1, math.ceil(settings.freeze_steps(pretrained) / steps_per_epoch))
    warmup = min(settings.warmup_steps, total_steps // 2)
    phases = []
    if freeze_epochs > 0:
        phases.append(
            (
                "frozen",
                0,
                freeze_epochs,
                _learning_rate(settings.learning_rate, freeze_epochs * steps_per_epoch, warmup),
            )
        )
    rest = (epochs - freeze_epochs) * steps_per_epoch
    if freeze_epochs > 0:
        peak = settings.learning_rate * settings.fine_tune_learning_rate_factor
        phases.append(("fine_tune", freeze_epochs, epochs, _learning_rate(peak, rest, 0)))
    else:
        phases.append(("full", 0, epochs, _learning_rate(settings.learning_rate, rest, warmup)))
    return phases, steps_per_epoch


def _validation(
    strategy, detector, eval_features, anchors, num_classes, resume_dir, settings, steps_per_epoch
):
    """The validation-mAP callback (best checkpoint, early stopping), or None where several
    workers train (each would score alone)."""
    if getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)():
        logging.info(
            "Several workers: no validation mAP and no best checkpoint (the last "
            "weights are exported)"
        )
        return None
    return trainer_callbacks.ValidationMap(
        detector,
        eval_features,
        anchors,
        num_classes,
        resume_dir,
        steps_per_epoch,
        nms={
            "score_threshold": settings.score_threshold,
            "iou_threshold": settings.nms_iou_threshold,
            "max_detections": settings.max_detections,
            "class_agnostic": settings.class_agnostic_nms,
        },
        patience=settings.early_stopping_patience,
    )


def _callbacks(model_run_dir: str, validation, settings: TrainingConfig, steps_per_epoch: int):
    """Validation mAP (when there is one), TensorBoard, the progress line."""
    callbacks = [tf.keras.callbacks.TensorBoard(log_dir=model_run_dir, update_freq="epoch")]
    if validation is not None:
        # Before TensorBoard in the list: the mAP it adds to the epoch's logs gets written.
        callbacks.insert(0, validation)
    callbacks.append(
        trainer_callbacks.ProgressLine(
            settings.train_steps,
            settings.batch_size,
            steps_per_epoch,
            log_every_steps=settings.log_every_steps,
        )
    )
    return callbacks


def run_fn(fn_args) -> None:
    """TFX Trainer entry point."""
    settings = TrainingConfig.from_hyperparameters(getattr(fn_args, "hyperparameters", None))
    # First of all: MultiWorkerMirroredStrategy must configure collective ops before any
    # TensorFlow op runs in this process.
    strategy = strategy_for(settings.distribution)
    transform_output = tft.TFTransformOutput(fn_args.transform_output)
    image_size = int(transform_output.transformed_feature_spec()[f.IMAGE].shape[0])
    names = class_names(transform_output)
    config = model_lib.DetectorConfig.from_training(settings, len(names), image_size)
    # Before anything expensive: a missing weights file stops the run here, with what to do.
    weights_file = weights.resolve(settings.backbone_weights, settings.alpha, image_size)
    anchors = config.anchors()
    logging.info(
        "Training MobileNetV2 SSDLite alpha=%s at %d px, %d classes (%s), %d steps, backbone "
        "from %s",
        settings.alpha,
        image_size,
        len(names),
        ", ".join(names),
        settings.train_steps,
        weights_file or "random init",
    )
    with strategy.scope():
        detector = model_lib.build_detector(config, weights_file)
        trainer = DetectorTrainer(detector, anchors, settings.giou_weight)
    train_data, eval_data, eval_features = _datasets(fn_args, transform_output, anchors, settings)
    phases, steps_per_epoch = _phases(settings, settings.train_steps, weights_file is not None)
    resume_dir = _resume_dir(fn_args, settings, settings.train_steps)
    validation = _validation(
        strategy,
        detector,
        eval_features,
        anchors,
        len(names),
        resume_dir,
        settings,
        steps_per_epoch,
    )
    callbacks = _callbacks(fn_args.model_run_dir, validation, settings, steps_per_epoch)
    for phase, first, last, learning_rate in phases:
        if phase != "full":
            configure_backbone(detector, phase, settings)
        _fit_phase(
            trainer,
            phase,
            learning_rate,
            first,
            last,
            steps_per_epoch,
            train_data,
            eval_data,
            settings.eval_steps,
            callbacks,
            resume_dir,
        )
        if trainer.stop_training:
            break
    best = validation.restore_best() if validation is not None else None
    if best:
        logging.info(
            "Exporting the best checkpoint: step %d, mAP@[.5:.95] %.4f, mAP@0.5 %.4f",
            best["step"],
            best["map"],
            best["map50"],
        )
    _export(fn_args, detector, transform_output, anchors, image_size, settings)
    if is_chief():  # one writer: a TFJob's workers share one model_run_dir
        _write_training_record(
            fn_args,
            names,
            image_size,
            settings,
            weights_file,
            best,
            validation.state["history"] if validation is not None else [],
        )
        tf.io.gfile.rmtree(resume_dir)  # exported: nothing may resume from it any more


def _export(fn_args, detector, transform_output, anchors, image_size, settings) -> None:
    module = export.DetectorExport(
        detector,
        transform_output,
        anchors,
        image_size,
        settings.score_threshold,
        settings.nms_iou_threshold,
        settings.max_detections,
        settings.class_agnostic_nms,
    )
    # Every worker must take part in saving under MultiWorkerMirroredStrategy; only the chief's
    # copy is the model. The others write beside the logs, each to its own folder (a TFJob's
    # workers share one model_run_dir).
    target = (
        fn_args.serving_model_dir
        if is_chief()
        else os.path.join(fn_args.model_run_dir, "worker_export", _task_name())
    )
    export.save(module, target)


def _task_name() -> str:
    task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task") or {}
    return f"{task.get('type', 'worker')}-{task.get('index', 0)}"


def _write_training_record(fn_args, names, image_size, settings, weights_file, best, history):
    """training.json beside the TensorBoard logs: what the report and the summary read."""
    record = {
        "classes": names,
        "image_size": image_size,
        "settings": vars(settings),
        "backbone_weights": weights_file or "random init",
        "best": best,  # the exported checkpoint: step, mAP, mAP@0.5 (None: no validation ran)
        "validation": history,  # mAP at every checkpoint
    }
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, "training.json"), "w") as out:
        out.write(json.dumps(record, indent=2))
