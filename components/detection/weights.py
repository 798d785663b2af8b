"""Where the backbone's starting weights come from: `training.backbone_weights`.

- "imagenet": Keras' ImageNet file for MobileNetV2 at this alpha, no top, at the published
  resolution nearest the input size (96, 128, 160, 192 or 224). Taken from Keras' cache
  (`~/.keras/models`, or `$KERAS_HOME/models`) when it is there, else downloaded into it from
  Keras' own location. With no network and no cached file the run stops at once, naming the file
  and where to put it: it never waits on a connection that will not come.
- "none": random init (the sample demo: synthetic shapes need no ImageNet features).
- a path, or a gs:// / s3:// URI, of a Keras .h5 weights file for this alpha (no top).

No TensorFlow import at module level: the CLI checks the setting before it starts a run.
`python -m litedet.components.detection.weights 0.35:224 0.5:224` downloads files into the
cache (the Dockerfile bakes chosen alphas into the image for clusters without egress).

Inside the image `$LITEDET_IMAGE_WEIGHTS` lists the ALPHA:SIZE pairs baked at build time (the
Dockerfile sets it, empty when none): there nothing is downloaded, and a run-time alpha whose
file is not baked stops at once with the build command that bakes it (`check_image_weights`).
"""

from __future__ import annotations

import os
import sys
import tempfile
import urllib.request
from typing import Optional

IMAGENET = "imagenet"
NONE = "none"
IMAGENET_SIZES = (96, 128, 160, 192, 224)
KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
DOWNLOAD_TIMEOUT_S = 20.0
# Set by the Dockerfile to the baked ALPHA:SIZE pairs: its presence means "in the image".
IMAGE_WEIGHTS_ENV = "LITEDET_IMAGE_WEIGHTS"


class WeightsUnavailable(RuntimeError):
    """The configured backbone weights cannot be had here; the message says what to do."""


def imagenet_filename(alpha: float, size: int = 224) -> str:
    """Keras' name of the ImageNet no-top MobileNetV2 weights file."""
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{size}_no_top.h5"


def nearest_size(image_size: int) -> int:
    return min(IMAGENET_SIZES, key=lambda size: (abs(size - image_size), -size))


def keras_cache_dir() -> str:
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "models")


def is_pretrained(setting: str) -> bool:
    return bool(setting) and setting.lower() != NONE


def _download(url: str, target: str, timeout_s: float) -> None:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=".partial-", dir=os.path.dirname(target))
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as src:
            while True:
                chunk = src.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
        os.replace(partial, target)  # whole or not at all
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def _imagenet(alpha: float, image_size: int, download: bool, timeout_s: float) -> str:
    size = nearest_size(image_size)
    name = imagenet_filename(alpha, size)
    cached = os.path.join(keras_cache_dir(), name)
    if os.path.exists(cached):
        return cached
    url = KERAS_WEIGHTS_URL + name
    if download:
        try:
            _download(url, cached, timeout_s)
            return cached
        except OSError as error:  # no route, DNS, refused, timed out, HTTP error
            reason = f"downloading {url} failed ({error})"
    else:
        reason = "downloading is off"
    raise WeightsUnavailable(
        f"training.backbone_weights=imagenet needs {name} (MobileNetV2 alpha {alpha}, "
        f"{size} px, no top) in {keras_cache_dir()}, and {reason}. Put the file there (from "
        f"{url}), or set training.backbone_weights to its path or a gs:// / s3:// URI, or to "
        "'none' to train from random init."
    )


def check_image_weights(setting: str, alpha: float, image_size: int, environ=None) -> None:
    """In the step image (`$LITEDET_IMAGE_WEIGHTS` set), an ImageNet file that was not baked in
    fails here, at once, with the build argument that bakes it: pods of a cluster without egress
    would otherwise wait on a download that cannot happen. Outside the image: nothing to check."""
    environ = os.environ if environ is None else environ
    if IMAGE_WEIGHTS_ENV not in environ or not is_pretrained(setting):
        return
    if setting.lower() != IMAGENET:
        return
    size = nearest_size(image_size)
    name = imagenet_filename(alpha, size)
    if os.path.exists(os.path.join(keras_cache_dir(), name)):
        return
    baked = environ.get(IMAGE_WEIGHTS_ENV, "").split()
    wanted = " ".join(sorted(set(baked) | {f"{float(alpha)}:{size}"}))
    raise WeightsUnavailable(
        f"training.backbone_weights=imagenet at alpha {alpha} needs {name}, which this image "
        f"does not hold (it bakes: {' '.join(baked) or 'none'}); rebuild it with "
        f'docker build --build-arg BACKBONE_WEIGHTS="{wanted}" (docs/cluster.md, "Image"), '
        "or run with an alpha it holds, or set training.backbone_weights to a gs:// / s3:// "
        "file or 'none'"
    )


def _copied(uri: str) -> str:
    """A local copy of a weights file on an object store (h5py reads local files only)."""
    import tensorflow as tf

    from litedet.components import object_storage as storage

    if storage.uses_s3(uri):
        storage.configure()
    if not tf.io.gfile.exists(uri):
        raise WeightsUnavailable(f"training.backbone_weights: {uri} does not exist")
    local = os.path.join(tempfile.mkdtemp(prefix="litedet-weights-"), os.path.basename(uri))
    tf.io.gfile.copy(uri, local, overwrite=True)
    return local


def resolve(
    setting: str,
    alpha: float,
    image_size: int,
    download: bool = True,
    timeout_s: float = DOWNLOAD_TIMEOUT_S,
) -> Optional[str]:
    """The local weights file the setting stands for; None for random init."""
    if not is_pretrained(setting):
        return None
    if setting.lower() == IMAGENET:
        check_image_weights(setting, alpha, image_size)  # in the image: baked or nothing
        return _imagenet(alpha, image_size, download, timeout_s)
    if "://" in setting:
        return _copied(setting)
    if not os.path.isfile(setting):
        raise WeightsUnavailable(f"training.backbone_weights: {setting} does not exist")
    return setting


def main(argv) -> int:
    """Downloads ImageNet files into Keras' cache: ALPHA:SIZE arguments, e.g. 0.35:224."""
    for item in argv:
        alpha, _, size = item.partition(":")
        path = resolve(IMAGENET, float(alpha), int(size or 224))
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
