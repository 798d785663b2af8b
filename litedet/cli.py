"""`litedet`: the one entry point. Verbs read like the job: demo, run, predict, sweep, config,
data, compile, kfp.

`litedet --help` and `litedet <verb> --help` import neither TFX nor TensorFlow, so they answer
at once; the heavy imports happen inside the verbs that need them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import List, Optional

from litedet import console
from litedet import export as export_targets
from litedet import register as register_verb
from litedet.components.tflite import FORMATS
from litedet.kfp import cli as kfp_cli

# A pushed version's models: its TFLite formats and its SavedModel (predict.SAVED_MODEL).
MODEL_FORMATS = list(FORMATS) + ["saved_model"]

# Exit codes: 0 done (and, for run/demo, the model blessed); 1 a step or a server failed;
# 2 bad configuration or input; 3 the run finished but no model was blessed (run, demo) or no
# sweep point fits the budgets (sweep). Scripts and CI can tell these apart without parsing.
EXIT_NOT_BLESSED = 3

EXAMPLES = {
    "demo": """examples:
  litedet demo                          # sample data, whole local pipeline, summary
  litedet demo --num-train 1000         # a larger sample dataset
  litedet demo --set transform.image_size=320""",
    "run": """examples:
  litedet run --config my_dataset.yaml
  litedet run --config voc.yaml --set transform.resize_mode=letterbox
  litedet run --set beam.runner=portable --set beam.job_endpoint=localhost:8099 \\
      --set beam.sdk_container_image=litedet:local     # Beam on a job service: docs/flink.md""",
    "config": """examples:
  litedet config                        # every setting with its default
  litedet config --config my.yaml --set transform.max_boxes=50""",
    "predict": """examples:
  litedet predict outputs/models/3 photo.jpg           # a pushed version (its shipped format)
  litedet predict outputs/models/3 images/ --format int8 --threshold 0.5
  litedet predict model_float16.tflite images/ --out predictions/   # predictions/1, 2 ...
  litedet predict outputs/pipeline_root/litedet/Trainer/model/7 a.jpg   # the SavedModel""",
    "val": """examples:
  litedet val outputs/models/3 --config my.yaml            # a pushed version (its shipped format)
  litedet val outputs/models/3 --format saved_model --split train
  litedet val model_int8.tflite --config my.yaml
  litedet val outputs/pipeline_root/litedet/Trainer/model/7   # a SavedModel, the sample data""",
    "export": """examples:
  litedet export outputs/models/3 --format onnx          # -> exports/model.onnx, labels.txt
  litedet export outputs/models/3 --format int8 --out app/assets/
  litedet export s3://bucket/models/3 --format saved_model

targets:
{targets}""",
    "sweep": """examples:
  litedet sweep                                   # alphas 0.35, 0.5, 0.75 at the configured size
  litedet sweep --alphas 0.35,0.5,0.75,1.0 --sizes 192,256 --max-latency-ms 15
  litedet sweep --max-size-mb 1.5 --set training.train_steps=1200""",
    "data": """examples:
  litedet data synth --out data/shapes --num-train 2000
  litedet data inspect --config my_dataset.yaml
  litedet data convert --config voc.yaml --out data/voc-tfrecords""",
}


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file of settings (see `litedet config`)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. transform.image_size=320 (repeatable)",
    )
    parser.add_argument(
        "--output-dir", help="where runs keep artifacts and ML Metadata (default: outputs/)"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show every log line instead of progress only"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="litedet",
        description="Train a compact MobileNetV2 object detector in a TFX pipeline and ship it "
        "as TFLite.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `litedet <verb> --help` for a verb's options and examples.\n\nExit codes: 0 "
        "done; 1 a step or a server failed; 2 bad configuration or input; 3 the run "
        "finished but the model was not blessed (run, demo), or no sweep point fits the "
        "budgets (sweep).",
    )
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    def verb(name, help_text):
        return verbs.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=(EXAMPLES.get(name) or "").format(targets=export_targets.targets_table())
            or None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    demo = verb("demo", "generate the sample data if missing and run the whole local pipeline")
    _add_config_flags(demo)
    demo.add_argument("--num-train", type=int, help="sample training images (default 400)")
    demo.add_argument("--num-eval", type=int, help="sample evaluation images (default 100)")

    run = verb("run", "run the local pipeline on your data and configuration")
    _add_config_flags(run)

    predict = verb(
        "predict",
        "detect objects in images with a trained model: JSON results and "
        "pictures with the boxes drawn",
    )
    predict.add_argument("model", help="a pushed version folder, a .tflite file or a SavedModel")
    predict.add_argument("sources", nargs="+", help="images and/or folders of images")
    predict.add_argument(
        "--out",
        default="predictions",
        help="where results go: each call writes a new numbered folder in it, predictions/1, "
        "predictions/2 ... (default: predictions/)",
    )
    predict.add_argument(
        "--threshold", type=float, default=0.3, help="lowest score kept (default 0.3)"
    )
    predict.add_argument(
        "--format",
        choices=MODEL_FORMATS,
        help="which model of a pushed version: a TFLite format or its saved_model (default: "
        "its shipped TFLite format)",
    )

    val = verb(
        "val",
        "score a model on a dataset split with the gate's scorer: a per-class table (images, "
        "instances, P, R, AP50, AP), COCO results JSON, in a new run folder",
    )
    val.add_argument(
        "model",
        help="a pushed version (folder, s3:// or gs://; a store folder: its latest version), "
        "a SavedModel or a .tflite file",
    )
    _add_config_flags(val)
    val.add_argument("--split", default="eval", help="the dataset split to score (default eval)")
    val.add_argument(
        "--format",
        choices=MODEL_FORMATS,
        help="which model of a pushed version (default: its shipped TFLite format)",
    )

    export = verb(
        "export",
        "write a pushed version in the form a runtime takes: ONNX (converted here), its TFLite "
        "files or its SavedModel (checked against the manifest)",
    )
    export.add_argument(
        "model", help="a pushed version (folder, s3:// or gs://); for onnx also a SavedModel"
    )
    export.add_argument(
        "--format", required=True, choices=list(export_targets.TARGETS), help="the target"
    )
    export.add_argument("--out", default="exports", help="folder to write (default: exports/)")
    export.add_argument("-v", "--verbose", action="store_true", help="show the converter's logs")

    sweep = verb(
        "sweep",
        "train several alphas (and input sizes), compare mAP, size and TFLite "
        "latency, and recommend the best that fits a budget",
    )
    _add_config_flags(sweep)
    sweep.add_argument(
        "--alphas",
        default="0.35,0.5,0.75",
        help="comma-separated MobileNetV2 alphas (default 0.35,0.5,0.75)",
    )
    sweep.add_argument(
        "--sizes", help="comma-separated input sizes (default: the configured transform.image_size)"
    )
    sweep.add_argument(
        "--max-latency-ms",
        type=float,
        default=0.0,
        help="latency budget per image, 1 thread (default: none)",
    )
    sweep.add_argument(
        "--max-size-mb", type=float, default=0.0, help="model file size budget (default: none)"
    )
    sweep.add_argument(
        "--sweep-dir",
        help="where points, table and plot go (default: "
        "<output_dir>/sweep); finished points are kept",
    )

    config = verb("config", "print the resolved configuration (defaults, file, overrides)")
    _add_config_flags(config)

    data = verb("data", "dataset tools: generate the sample set, inspect a dataset")
    data_verbs = data.add_subparsers(dest="data_verb", metavar="ACTION", required=True)
    synth = data_verbs.add_parser("synth", help="write the synthetic shapes dataset (COCO form)")
    synth.add_argument("--out", required=True, help="folder to write")
    synth.add_argument("--num-train", type=int, default=400)
    synth.add_argument("--num-eval", type=int, default=100)
    synth.add_argument("--seed", type=int, default=0)
    inspect = data_verbs.add_parser(
        "inspect",
        help="read a dataset's annotations and report classes and counts (no pipeline run)",
    )
    _add_config_flags(inspect)
    convert = data_verbs.add_parser(
        "convert",
        help="write the dataset as TF OD API TFRecords, checked as the pipeline checks it",
    )
    _add_config_flags(convert)
    convert.add_argument(
        "--out",
        required=True,
        help="folder to write: new or empty; written whole or not at all (a temporary folder "
        "beside it, renamed at the end, with a completion marker readers check)",
    )
    convert.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a non-empty --out (only once the new output is complete)",
    )
    kfp_cli.add_verbs(verbs)
    register_verb.add_verb(verbs)
    return parser


def _load(args, extra: Optional[List[str]] = None):
    from litedet.pipeline import configs

    overrides = list(extra or []) + list(args.overrides)
    if getattr(args, "output_dir", None):
        overrides.append(f"output_dir={args.output_dir}")
    return configs.load_config(args.config, overrides)


def _check_backbone_weights(config, alphas) -> None:
    """A run that needs weights this machine cannot get stops here, before any step runs
    (the Trainer would stop at the same error, minutes later)."""
    from litedet.components.detection import weights

    for alpha in alphas:
        path = weights.resolve(config.training.backbone_weights, alpha, config.transform.image_size)
        if path:
            print(f"Backbone weights (alpha {alpha:g}): {path}", flush=True)


def _run_pipeline(config, verbose: bool) -> int:
    started = time.time()
    run_dir = console.start_run_folder(config)
    log_path = console.setup_logging(run_dir, verbose)
    # Native libraries (TensorFlow's import, the TFLite converter, Beam's workers) write their
    # logs to stderr: into run.log. What litedet itself says stays on the terminal.
    with console.native_logs_to(log_path, enabled=not verbose):
        return _run_in(config, run_dir, log_path, started)


def _run_in(config, run_dir: str, log_path: str, started: float) -> int:
    from litedet import run_folder, run_summary
    from litedet.data import inspect
    from litedet.pipeline import local_runner

    _check_backbone_weights(config, [config.training.alpha])
    if config.uses_sample_data:
        s = config.sample_data
        print(
            f"Sample data: {s.num_train} training and {s.num_eval} evaluation images "
            f"(generated once, then cached)",
            flush=True,
        )
    dataset = local_runner.resolve_dataset(config)
    print(f"Dataset: {dataset.format} at {dataset.root}", flush=True)
    # Before any step: a split that would be empty stops here, in one line, with the list of
    # what is missing in the run folder.
    report = inspect.inspect(dataset)
    try:
        inspect.check_runnable(report)
    except inspect.DataError as error:
        kept = console.keep_quarantine_lines(inspect.quarantine_lines(report), {}, run_dir)
        print(f"litedet: error: {error}; every image set aside: {kept}", file=sys.stderr)
        return 2
    definition = local_runner.build(config, dataset)
    progress = console.Progress(
        total=len(definition.components), echo_training=not sys.stdout.isatty()
    )
    logging.getLogger().addHandler(progress)
    print(f"Running pipeline '{config.pipeline_name}' (log: {log_path})", flush=True)
    # TFX's Beam executors parse sys.argv with absl flags: our own flags (-v would be read as
    # absl's --verbosity, eating the next argument) must not reach them. They are parsed already.
    sys.argv = sys.argv[:1]
    try:
        local_runner.execute(definition)
    except Exception as error:  # noqa: BLE001 - every failure becomes one line and an exit code
        return _step_failed(error, progress.current or "the pipeline", run_dir, log_path)
    finally:
        logging.getLogger().removeHandler(progress)
    summary = run_summary.latest_run(os.path.abspath(config.metadata_path))
    console.keep_quarantine(summary.components["DetectionExampleGen"].uri("quarantine"), run_dir)
    console.print_summary(summary, time.time() - started, config, run_dir)
    written = run_folder.write_results(summary, run_dir)
    if written:
        names = ", ".join(os.path.basename(p) for p in written)
        print(f"  results:           {names} in {run_dir}")
    if "ModelGate" in summary.components and not summary.gate_report()["blessed"]:
        return EXIT_NOT_BLESSED
    return 0


def _step_failed(error: Exception, step: str, run_dir: str, log_path: str) -> int:
    """One line for a failed step: what failed and what to do. Exit 2 when the data or the
    configuration is at fault, 1 otherwise; the traceback goes to the run's log."""
    from litedet.components.example_gen.executor import EmptySplitError

    logging.error("%s failed", step, exc_info=error)
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if isinstance(error, EmptySplitError):
        kept = console.keep_quarantine_lines(error.quarantine_lines, error.summary, run_dir)
        print(
            f"litedet: error: {step} failed: {first_line}. Every image set aside, with its "
            f"reason: {kept}; fix those images or the dataset settings and run again",
            file=sys.stderr,
        )
        return 2
    if isinstance(error, _data_errors()):
        print(
            f"litedet: error: {step} failed: {first_line} (fix what it names and run again; "
            f"details in {log_path})",
            file=sys.stderr,
        )
        return 2
    print(
        f"litedet: error: {step} failed: {type(error).__name__}: {first_line} (an internal "
        f"error: the traceback is in {log_path}; please report it with that file)",
        file=sys.stderr,
    )
    return 1


def _data_errors() -> tuple:
    """What a user fixes in their data or settings (exit 2), as opposed to an internal error."""
    from litedet.components.detection.weights import WeightsUnavailable
    from litedet.components.example_gen.annotations import AnnotationError
    from litedet.components.example_gen.config import DatasetConfigError
    from litedet.components.pusher.store import StoreError
    from litedet.data.inspect import DataError
    from litedet.pipeline.configs import ConfigError

    return (
        ConfigError,
        DatasetConfigError,
        AnnotationError,
        DataError,
        FileNotFoundError,
        StoreError,
        WeightsUnavailable,
    )


def _number_list(text: str, kind, flag: str) -> list:
    from litedet.pipeline.configs import ConfigError

    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{flag}: {text!r} is not a comma-separated list of numbers") from None


def _sweep(args, config) -> int:
    from litedet import sweep
    from litedet.components.detection import check_alpha, check_image_size
    from litedet.pipeline.configs import ConfigError

    alphas = _number_list(args.alphas, float, "--alphas")
    sizes = (
        _number_list(args.sizes, int, "--sizes") if args.sizes else [config.transform.image_size]
    )
    for alpha in alphas:
        try:
            check_alpha(alpha)
        except ValueError as e:
            raise ConfigError(f"--alphas: {e}") from None
    for size in sizes:
        try:
            check_image_size(size)
        except ValueError as e:
            raise ConfigError(f"--sizes: {e}") from None
    _check_backbone_weights(config, alphas)
    sweep_dir = args.sweep_dir or os.path.join(config.output_dir, "sweep")
    log_path = console.setup_logging(console.start_run_folder(config), args.verbose)
    sys.argv = sys.argv[:1]  # see _run_pipeline
    print(
        f"Sweep over alpha {', '.join(f'{a:g}' for a in alphas)} and input "
        f"{', '.join(map(str, sizes))} px into {sweep_dir} (log: {log_path})",
        flush=True,
    )
    started = time.time()
    outcome = sweep.run(
        config,
        alphas,
        sizes,
        sweep_dir,
        args.max_latency_ms,
        args.max_size_mb,
        progress=lambda m: print("  " + m, flush=True),
    )
    print(f"\nDone in {time.time() - started:.0f} s.\n")
    print(outcome["table"])
    print(
        f"\n  table: {os.path.join(sweep_dir, sweep.TABLE_FILE)}\n  plot:  "
        f"{os.path.join(sweep_dir, sweep.PLOT_FILE)}"
    )
    return 0 if outcome["best"] else EXIT_NOT_BLESSED


def _predict(args) -> int:
    from litedet import predict

    started = time.time()
    out, results = predict.run(
        args.model, args.sources, args.out, args.threshold, args.format, numbered=True
    )
    for result in results:
        found = ", ".join(f"{d['name']} {d['score']:.2f}" for d in result["detections"])
        print(
            f"  {result['image']}: {len(result['detections'])} objects"
            + (f" ({found})" if found else "")
        )
    print(
        f"{len(results)} images in {time.time() - started:.1f} s -> "
        f"{os.path.join(out, predict.PREDICTIONS_FILE)} and the drawn images in {out}/"
    )
    return 0


def _val(args) -> int:
    from litedet import val

    config = _load(args)
    run_dir = console.start_run_folder(config)
    log_path = console.setup_logging(run_dir, args.verbose)
    sys.argv = sys.argv[:1]  # see _run_pipeline: the ExampleGen runs on Beam
    print(f"Validating {args.model} (log: {log_path})", flush=True)
    started = time.time()
    with console.native_logs_to(log_path, enabled=not args.verbose):  # TFLite's notices
        report = val.run(
            config,
            args.model,
            args.split,
            args.format,
            run_dir,
            progress=lambda m: print("  " + m, flush=True),
        )
    print(f"\n{val.format_table(report['table'])}\n")
    print(
        f"P and R at score >= {report['p_r_at']['score_threshold']}, IoU >= "
        f"{report['p_r_at']['iou_threshold']}; AP50: AP@0.5, AP: AP@[.5:.95] (pycocotools). "
        f"{report['ms_per_image']:.1f} ms per image, done in {time.time() - started:.0f} s."
    )
    print(f"Results in {run_dir}/: " + ", ".join(os.path.basename(p) for p in report["files"]))
    return 0


def _export(args) -> int:
    from litedet import export

    started = time.time()
    info = export.run(args.model, args.format, args.out)
    size = f", {info['bytes'] / 1e6:.2f} MB" if "bytes" in info else ""
    print(f"Wrote {info['file']} ({args.format}{size}) in {time.time() - started:.0f} s")
    if args.format == export.ONNX:
        shape = ", ".join(map(str, info["input"]["shape"]))
        print(
            f"  input:   images float32 [{shape}], RGB resized ({info['resize_mode']}) and scaled "
            "to [-1, 1]\n  outputs: " + ", ".join(info["outputs"])
        )
    print(
        f"  labels:  {os.path.join(args.out, 'labels.txt')}; what and how: "
        f"{os.path.join(args.out, export.EXPORT_FILE)}"
    )
    return 0


def _data(args) -> int:
    if args.data_verb == "synth":
        from litedet.data import sample as sample_data

        started = time.time()
        counts = sample_data.generate(
            args.out, num_train=args.num_train, num_eval=args.num_eval, seed=args.seed
        )
        print(f"Wrote {args.out} in {time.time() - started:.1f} s: {counts}")
        return 0
    config = _load(args)
    from litedet.components.example_gen import annotations
    from litedet.pipeline import configs, local_runner

    dataset = local_runner.resolve_dataset(config)
    if args.data_verb == "convert":
        from litedet.data import convert

        try:  # before TensorFlow is imported: a refused --out answers at once
            convert.check_out(os.path.abspath(args.out), args.overwrite)
        except convert.ConvertError as e:
            print(f"litedet: error: {e}", file=sys.stderr)
            return 2
        from litedet.components.example_gen.executor import EmptySplitError
        from litedet.components.example_gen.fingerprint import scan

        started = time.time()
        try:
            _, _, dataset_bytes = scan(dataset, dataset.root)  # small data: Beam in-process
            summary = convert.convert(
                dataset, args.out, configs.beam_args_for(config, dataset_bytes), args.overwrite
            )
        except (convert.ConvertError, EmptySplitError) as e:
            print(f"litedet: error: {e}", file=sys.stderr)
            return 2
        print(
            f"Wrote {os.path.join(args.out, 'examples')} in {time.time() - started:.0f} s: "
            f"{summary['examples']} examples; quarantined "
            f"{summary.get('quarantined') or 0} ({os.path.join(args.out, 'quarantine')}); "
            f"label map in {os.path.join(args.out, 'label_map')}"
        )
        return 0
    from litedet.data import inspect

    report = inspect.inspect(dataset)
    if report is None:
        print(
            f"inspect reads {', '.join(annotations.READERS)} annotations; for {dataset.format} "
            "run `litedet data convert`: its quarantine summary counts every record"
        )
        return 2
    inspect.print_report(report)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    code = _main(argv)
    storage = sys.modules.get("litedet.components.object_storage")
    if storage is not None and storage.is_configured() and argv is None:
        storage.exit_process(code)  # as a command: skip the S3 plugin's aborting teardown
    return code


def _main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    console.quiet_environment(getattr(args, "verbose", False))
    if args.verb in kfp_cli.VERBS:
        return kfp_cli.main(args)
    if args.verb == register_verb.VERB:
        return register_verb.main(args)
    try:
        if args.verb == "data":
            return _data(args)
        if args.verb == "predict":
            return _predict(args)
        if args.verb == "val":
            return _val(args)
        if args.verb == "export":
            return _export(args)
        extra = []
        if args.verb == "demo":
            extra = [
                f"sample_data.{k}={v}"
                for k, v in (("num_train", args.num_train), ("num_eval", args.num_eval))
                if v
            ]
        config = _load(args, extra)
        if args.verb == "config":
            import yaml

            print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
            return 0
        if args.verb == "sweep":
            return _sweep(args, config)
        if args.verb == "demo" and not config.uses_sample_data:
            print(
                "litedet demo runs on the sample data; use `litedet run` for a dataset",
                file=sys.stderr,
            )
            return 2
        return _run_pipeline(config, args.verbose)
    except _data_errors() as e:
        print(f"litedet: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
