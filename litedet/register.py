"""`litedet register VERSION`: (re)registers a version that is already in the model store in the
configured model registry.

The recovery path the pusher's failure messages name: when the registry was down, the files are
in the store (a folder, gs:// or s3://) and the step failed; this registers them, from the same
configuration the pipeline ran with (`push.destination`, `push.registry`, `push.model_name`).
Registering is idempotent: a version the registry already has for that store version is found
and printed, not registered twice. The version's files are checked against its manifest first.

Exit codes: 0 registered (or already); 1 the registry failed; 2 a bad configuration, a version
the store does not have, or files that do not match their manifest.
"""

from __future__ import annotations

import argparse
import sys

VERB = "register"

HELP = "register a version already in the model store in the configured registry (MLflow, Kubeflow)"

EXAMPLES = """examples:
  litedet register 7 --config my.yaml          # push.destination's version 7 into push.registry
  litedet register 7 --config my.yaml --set 'push.registry={"kind": "mlflow", "tracking_uri": "https://mlflow.example"}'

Credentials come from the environment, as for the pipeline: MLFLOW_TRACKING_TOKEN (or
MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD) for MLflow; the Kubeflow Model Registry
client reads the service account token ($KF_PIPELINES_SA_TOKEN_PATH or the pod's own)."""


def add_verb(verbs) -> None:
    parser = verbs.add_parser(
        VERB,
        help=HELP,
        description=HELP + ". The recovery the pusher's registry errors name.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("version", type=int, help="the store version's number, e.g. 7")
    parser.add_argument("--config", help="YAML file of settings (see `litedet config`)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. push.model_name=detector (repeatable)",
    )


def _error(message: str, code: int) -> int:
    print(f"litedet: error: {message}", file=sys.stderr)
    return code


def main(args) -> int:
    import logging

    from litedet.components.pusher import registry as registry_lib
    from litedet.components.pusher import store
    from litedet.pipeline import configs

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = configs.load_config(args.config, args.overrides)
    except (configs.ConfigError, FileNotFoundError) as e:
        return _error(str(e), 2)
    destination = config.push_destination
    settings = dict(config.push.registry or {})
    if settings.get("kind", "none") == "none":
        return _error(
            f"push.registry: kind is 'none', so there is no registry to register version "
            f'{args.version} in; set push.registry (e.g. {{"kind": "mlflow", '
            f'"tracking_uri": "https://..."}}) in the --config file',
            2,
        )
    if destination.startswith("s3://"):
        # s3:// through tf.io.gfile: tensorflow-io. Imported only here: with AWS_* variables set,
        # importing the module loads TensorFlow (for Beam's workers; components/object_storage.py).
        from litedet.components import object_storage as storage

        try:
            storage.configure()
        except storage.StorageError as e:
            return _error(f"push.destination {destination}: {e}", 2)
    try:
        versions = store.list_versions(destination)
        if args.version not in versions:
            have = ", ".join(map(str, versions)) or "none"
            return _error(
                f"push.destination {destination} has no version {args.version} (it has {have}); "
                "give one of those, or the --config whose store holds it",
                2,
            )
        uri = store.version_uri(destination, args.version)
        store.verify(uri)
        manifest = store.read_manifest(uri)
    except store.StoreError as e:
        return _error(f"push.destination {destination}: {e}", 2)
    name = config.push.model_name
    try:
        registry = registry_lib.make_registry(settings, name)
    except (TypeError, ValueError) as e:
        return _error(f"push.registry: {e}", 2)
    try:
        registered = registry.register(name, uri, manifest)
    except registry_lib.RegistryError as e:
        return _error(str(e), 1)
    print(
        f"Registered {name} store version {args.version} ({uri}) in {registry.kind}: "
        f"version {registered}"
    )
    return 0
