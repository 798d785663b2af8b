"""What a person sees of a run: progress lines, the log file, the closing summary.

The runner's own INFO stream goes to a log file in the run folder; the terminal gets one line
per pipeline step (Progress) and, at the end, the summary (print_summary).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time


class Progress(logging.Handler):
    """Turns the runner's component log lines into one progress line per step. With
    `echo_training`, the Trainer's own progress log lines (step, loss, img/s, validation mAP)
    are printed too, as plain lines: a terminal gets one refreshing line from the Trainer
    instead (components/trainer/callbacks.py), but a log file or a CI console would otherwise
    see nothing for the whole training."""

    def __init__(self, total: int, echo_training: bool = False):
        super().__init__(logging.INFO)
        self.total, self.done, self.echo_training = total, 0, echo_training
        self.started, self.cached = time.time(), False
        self.current = ""  # the step running now: what a failure names

    def emit(self, record: logging.LogRecord) -> None:
        # The local runner runs one component at a time, so the lines come in order.
        message = record.getMessage()
        if message.startswith("Component ") and message.endswith(" is running."):
            self.started, self.cached = time.time(), False
            self.current = message.split()[1]
            print(f"  [{self.done + 1}/{self.total}] {self.current} ...", flush=True)
        elif message.startswith("A cached execution"):
            self.cached = True
        elif message.startswith("Component ") and message.endswith(" is finished."):
            self.done += 1
            how = "from cache" if self.cached else "done"
            print(
                f"  [{self.done}/{self.total}] {message.split()[1]} {how} in "
                f"{time.time() - self.started:.1f} s",
                flush=True,
            )
        elif self.echo_training and message.startswith(TRAINING_LOG_PREFIX):
            print("      " + message[len(TRAINING_LOG_PREFIX) :], flush=True)


# The Trainer's progress log lines start with this (components/trainer/callbacks.py).
TRAINING_LOG_PREFIX = "Training "


@contextlib.contextmanager
def native_logs_to(log_path: str, enabled: bool = True):
    """Sends what native code writes to stderr (TensorFlow's and the TFLite converter's C++
    logs, Beam workers started meanwhile) to the run's log file instead of the terminal. Python's
    own output is unchanged: the progress lines go to stdout."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    target = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.dup2(target, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(target)


CONFIG_FILE = "config.yaml"
LOG_FILE = "run.log"


def start_run_folder(config) -> str:
    """`<output_dir>/runs/<local time>/` holding the run's resolved configuration (every setting,
    defaults included: the file reproduces the run with `litedet run --config`), its log and,
    after the run, its report."""
    import yaml

    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = os.path.join(config.output_dir, "runs", stamp)
    run_dir, n = base, 1
    while os.path.exists(run_dir):  # two runs started in the same second
        n += 1
        run_dir = f"{base}-{n}"
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, CONFIG_FILE), "w") as f:
        yaml.safe_dump(config.to_dict(), f, sort_keys=False)
    return run_dir


def setup_logging(run_dir: str, verbose: bool) -> str:
    """Every log line goes to `<run_dir>/run.log`; the terminal shows progress only, unless
    `verbose`. Returns the log's path."""
    from absl import logging as absl_logging

    log_path = os.path.join(run_dir, LOG_FILE)
    absl_logging.set_verbosity(absl_logging.INFO)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    file_handler = logging.FileHandler(log_path)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root.addHandler(file_handler)
    absl_handler = absl_logging.get_absl_handler()
    if not verbose:
        absl_handler.setLevel(logging.ERROR)  # the progress lines replace the INFO stream
    return log_path


def quiet_environment(verbose: bool) -> None:
    """Set before TensorFlow loads; Beam's worker processes inherit it."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFX 1.16 is built on Keras 2
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("PYTHONWARNINGS", "ignore")
        import warnings

        warnings.simplefilter("ignore")
        # TensorFlow's function finalizers complain at interpreter teardown ("Exception ignored
        # in AtomicFunction.__del__"): harmless, so into the log file instead of the terminal.
        sys.unraisablehook = lambda unraisable: logging.debug(
            "ignored in %s: %r", unraisable.object, unraisable.exc_value
        )


def print_summary(summary, seconds: float, config, run_dir: str) -> None:
    """The closing summary of a local run: data, artifacts, the verdict, where things are."""
    data = summary.quarantine_summary()
    kept = ", ".join(f"{split} {n}" for split, n in data["examples"].items())
    quarantined = sum(data["quarantined"].values())
    print(f"\nDone in {seconds:.0f} s (run {summary.run_id}).")
    print(f"  images kept:       {kept}")
    reasons = ", ".join(f"{r} {n}" for r, n in sorted(data["quarantined"].items()))
    print(f"  quarantined:       {quarantined}" + (f" ({reasons})" if reasons else ""))
    print("  objects per class: " + ", ".join(f"{c} {n}" for c, n in data["objects"].items()))
    anomalies = {s: a for s, a in summary.anomalies().items() if a}
    print(
        "  schema anomalies:  "
        + (
            "none"
            if not anomalies
            else "; ".join(f"{s}: {', '.join(a)}" for s, a in anomalies.items())
        )
    )
    example_gen = summary.components["DetectionExampleGen"]
    transform = summary.components["Transform"]
    print(f"  examples:          {example_gen.uri('examples')}")
    print(f"  quarantine:        {example_gen.uri('quarantine')}")
    print(f"  label map:         {example_gen.uri('label_map')}")
    print(f"  transform graph:   {transform.uri('transform_graph')}")
    trainer = summary.components.get("Trainer")
    if trainer:
        print(f"  model (SavedModel): {os.path.join(trainer.uri('model'), 'Format-Serving')}")
        print(f"  TensorBoard:       tensorboard --logdir {trainer.uri('model_run')}")
        record = summary.training_record()
        best, total = record.get("best"), record.get("settings", {}).get("train_steps")
        if best:
            print(
                f"  best checkpoint:   step {best['step']} of {total}: validation "
                f"mAP@[.5:.95] {best['map']:.3f}, mAP@0.5 {best['map50']:.3f} (exported)"
            )
    converter = summary.components.get("TFLiteConverter")
    if converter:
        folder = converter.uri("tflite_models")
        sizes = ", ".join(
            f"{name} {os.path.getsize(os.path.join(folder, name)) / 1e6:.2f} MB"
            for name in sorted(os.listdir(folder))
            if name.endswith(".tflite")
        )
        print(f"  TFLite models:     {folder} ({sizes})")
    if "ModelGate" in summary.components:
        print_verdict(summary)
    if "RunReport" in summary.components:
        print(f"  report:            {copy_report(summary, run_dir)}")
    print(f"  configuration:     {os.path.join(run_dir, CONFIG_FILE)}")
    print(f"  ML Metadata:       {config.metadata_path}")


def print_verdict(summary) -> None:
    gate = summary.gate_report()
    baseline = gate.get("baseline_map50")
    version = (gate.get("baseline") or {}).get("version")
    print(
        f"  mAP@0.5 (eval):    {gate['map50']:.3f}   mAP@[.5:.95] {gate['map']:.3f}"
        + (f"   (pushed version {version}: {baseline:.3f})" if baseline is not None else "")
        + f"   on {gate['num_eval_images']} images"
    )
    per_class = gate.get("ap50_per_class") or {}
    if per_class:
        print("  AP@0.5 per class:  " + ", ".join(f"{k} {v:.2f}" for k, v in per_class.items()))
    sizes = {k: v for k, v in (gate.get("ap_by_size") or {}).items() if v is not None}
    if sizes:
        print("  AP by object size: " + ", ".join(f"{k} {v:.3f}" for k, v in sizes.items()))
    for fmt, scores in gate["formats"].items():
        if fmt != "saved_model":
            print(
                f"  TFLite {fmt + ':':9s}  mAP@0.5 {scores['map50']:.3f}, "
                f"{scores['size_bytes'] / 1e6:.2f} MB, {scores['latency_ms']:.1f} ms "
                "(1 thread)" + ("  <- shipped format" if fmt == gate["ship_format"] else "")
            )
    if gate["blessed"]:
        print("  blessed:           yes")
    else:
        print(
            "  blessed:           NO\n" + "".join(f"    - {r}\n" for r in gate["reasons"]), end=""
        )
    push = summary.push_record()
    if push["pushed"]:
        registered = (
            f", registered in {push['registry_kind']} as version {push['registry_version']}"
            if push["registered"]
            else ""
        )
        print(
            f"  pushed:            {push['pushed_destination']} (version "
            f"{push['pushed_version']}{registered})"
        )
    else:
        print(f"  pushed:            nothing ({push['push_reason']})")


QUARANTINE_FILE = "quarantine.jsonl"


def keep_quarantine(quarantine_uri: str, run_dir: str) -> str:
    """The ExampleGen's quarantine list, copied into the run folder; returns the copy's path."""
    import shutil

    target = os.path.join(run_dir, QUARANTINE_FILE)
    shutil.copyfile(os.path.join(quarantine_uri, QUARANTINE_FILE), target)
    return target


def keep_quarantine_lines(lines: str, summary: dict, run_dir: str) -> str:
    """A quarantine list that has no artifact to copy from (a failed ExampleGen's: TFX removes a
    failed step's outputs; or the check before a run), written into the run folder with its
    summary when there is one; returns the list's path."""
    import json

    target = os.path.join(run_dir, QUARANTINE_FILE)
    with open(target, "w") as f:
        f.write(lines)
    if summary:
        with open(os.path.join(run_dir, "quarantine_summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    return target


def copy_report(summary, run_dir: str) -> str:
    """The RunReport step's page, copied into the run folder; returns the copy's path."""
    import shutil

    target = os.path.join(run_dir, "report.html")
    shutil.copyfile(summary.components["RunReport"].uri("report"), target)
    return target
