"""`litedet data convert`: a dataset in any supported format -> TF Object Detection API
TFRecords, exactly as the pipeline's DetectionExampleGen writes them (same checks, label map and
quarantine), without running the pipeline. Useful to hand data to other TF OD API tools, or to
feed the pipeline pre-converted `tfrecord` sources.

The output is whole or absent: everything is written into a temporary folder beside `--out`
(`.<name>.incomplete-<pid>-*`, marked incomplete from its first moment), finished with a
completion marker listing every file (components/example_gen/completion.py), and only then
renamed to `--out`. A non-empty `--out` is refused unless `overwrite` is given; the old folder
is then moved aside and removed after the rename. A run killed at any point leaves `--out`
either as it was, or whole, or absent; the temporary folders of killed runs are removed by the
next convert into the same place. Readers (the ExampleGen, on `tfrecord` sources) refuse a
convert output without a valid marker.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from typing import Dict, List

from litedet.components.example_gen import completion
from litedet.components.example_gen.config import DatasetConfig

TEMP_INFIX = ".incomplete-"
TRASH_INFIX = ".replaced-"


class ConvertError(ValueError):
    """An output folder convert will not write into; the message names it."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(parent: str, name: str) -> None:
    """Removes the temporary folders of earlier converts into `name` whose process is gone."""
    for entry in os.listdir(parent):
        for infix in (TEMP_INFIX, TRASH_INFIX):
            prefix = f".{name}{infix}"
            if entry.startswith(prefix):
                pid = entry[len(prefix) :].split("-", 1)[0]
                if pid.isdigit() and not _pid_alive(int(pid)):
                    shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def check_out(out: str, overwrite: bool) -> bool:
    """Whether `out` exists with something in it; refuses it unless `overwrite`."""
    if "://" in out:
        raise ConvertError(f"--out {out}: convert writes to a local folder")
    if not os.path.lexists(out):
        return False
    if not os.path.isdir(out) or os.path.islink(out):
        raise ConvertError(f"--out {out}: exists and is not a folder")
    if not os.listdir(out):
        return False
    if not overwrite:
        raise ConvertError(
            f"--out {out}: not empty; give an empty or new folder, or --overwrite to replace it "
            "(it is replaced only once the new output is complete)"
        )
    return True


def convert(
    dataset: DatasetConfig,
    out_dir: str,
    beam_pipeline_args: List[str],
    overwrite: bool = False,
) -> Dict:
    """Writes `<out_dir>/examples/Split-<split>/*.gz`, `<out_dir>/label_map/`,
    `<out_dir>/quarantine/` and the completion marker, whole or not at all; returns the
    quarantine summary (counts per split and reason).

    Raises:
      ConvertError: `out_dir` is not empty and `overwrite` is not set, or is not a folder.
    """
    out = os.path.abspath(out_dir)
    replace = check_out(out, overwrite)

    from tfx.types import standard_artifacts

    from litedet.components import artifacts
    from litedet.components.example_gen.executor import SUMMARY_FILE, Executor

    parent, name = os.path.split(out)
    os.makedirs(parent, exist_ok=True)
    _remove_stale(parent, name)
    work = tempfile.mkdtemp(prefix=f".{name}{TEMP_INFIX}{os.getpid()}-", dir=parent)
    try:
        open(os.path.join(work, completion.INCOMPLETE_MARKER), "w").close()
        outputs = {
            "examples": [standard_artifacts.Examples()],
            "label_map": [artifacts.LabelMap()],
            "quarantine": [artifacts.QuarantinedRecords()],
        }
        for key, (artifact,) in outputs.items():
            artifact.uri = os.path.join(work, key)
        beam_tmp = os.path.join(work, ".beam-tmp")
        context = Executor.Context(beam_pipeline_args=beam_pipeline_args, tmp_dir=beam_tmp)
        properties = {"dataset": dataset.to_json(), "input_base": dataset.root}
        Executor(context).Do({}, outputs, properties)
        shutil.rmtree(beam_tmp, ignore_errors=True)
        _remove_beam_leftovers(work)
        with open(os.path.join(work, "quarantine", SUMMARY_FILE)) as f:
            summary = json.load(f)
        os.remove(os.path.join(work, completion.INCOMPLETE_MARKER))
        completion.write_complete(work, summary)
        _put_in_place(work, out, replace)
        return summary
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def _remove_beam_leftovers(folder: str) -> None:
    """Beam's file sinks write through `beam-temp-*` folders beside the shards; none may stay
    among them (a reader globbing `*` would take their files for shards)."""
    for parent, subfolders, _ in os.walk(folder):
        for sub in list(subfolders):
            if sub.startswith("beam-temp-"):
                shutil.rmtree(os.path.join(parent, sub), ignore_errors=True)
                subfolders.remove(sub)


def _put_in_place(work: str, out: str, replace: bool) -> None:
    """Renames the finished `work` folder to `out`. An old `out` is moved aside first and
    removed last: killed in between, `out` is absent (never half old, half new)."""
    if not replace:
        try:
            os.rename(work, out)  # onto nothing, or onto an empty folder
            return
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            raise ConvertError(f"--out {out}: another process wrote into it meanwhile") from e
    parent, name = os.path.split(out)
    trash = tempfile.mkdtemp(prefix=f".{name}{TRASH_INFIX}{os.getpid()}-", dir=parent)
    os.rename(out, os.path.join(trash, name))
    os.rename(work, out)
    shutil.rmtree(trash, ignore_errors=True)
