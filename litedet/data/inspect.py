"""`litedet data inspect` and `litedet run`'s first check: what a dataset's annotations name,
split by split, and whether each named image is there — before any pipeline runs.

Reads the annotations with the ExampleGen's own readers (annotations.READERS), so what is
counted here is what the pipeline will try to read. Image files are checked on local roots (a
stat each: seconds for COCO 2017); on an object store only the annotations are read.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional

from litedet.components.example_gen.config import DatasetConfig


class DataError(ValueError):
    """The dataset cannot make a run; the message says which split, why, and what to set."""


@dataclasses.dataclass
class SplitReport:
    images: int = 0  # records the annotations name
    found: Optional[int] = None  # of those, image files present (None: not checked)
    objects: int = 0
    # Quarantine entries (as the ExampleGen writes them) of the images that cannot be used:
    # set aside by the reader (a malformed label, a bad file name) or missing.
    set_aside: List[dict] = dataclasses.field(default_factory=list)

    @property
    def problems(self) -> int:
        return sum(1 for entry in self.set_aside if entry["reason"] != "missing_image")

    @property
    def missing(self) -> List[str]:
        return [e["image"] for e in self.set_aside if e["reason"] == "missing_image"]


@dataclasses.dataclass
class Report:
    dataset: DatasetConfig
    splits: Dict[str, SplitReport]
    classes: List[str]


def inspect(dataset: DatasetConfig, check_files: bool = True) -> Optional[Report]:
    """The per-split report of `dataset`; None for a format read only on Beam workers
    (tfrecord)."""
    from litedet.components.example_gen import annotations, files

    reader = annotations.READERS.get(dataset.format)
    if reader is None:
        return None
    records, label_map = reader(dataset)
    check = check_files and not files.is_remote(dataset.root)
    splits = {split: SplitReport(found=0 if check else None) for split in dataset.sources}
    for record in records:
        report = splits[record.split]
        if record.problem[:1] == ("annotation_without_image",):  # annotations, not an image
            report.set_aside.append(_entry(record, *record.problem))
            continue
        report.images += 1
        report.objects += len(record.objects)
        if record.problem:
            report.set_aside.append(_entry(record, *record.problem))
        elif check:
            if os.path.isfile(record.image_path):
                report.found += 1
            else:
                report.set_aside.append(
                    _entry(record, "missing_image", f"{record.image_path} does not exist")
                )
    return Report(dataset, splits, list(label_map.names))


def _entry(record, reason: str, detail: str) -> dict:
    return {
        "source_id": record.source_id,
        "split": record.split,
        "image": record.image_path,
        "reason": reason,
        "detail": detail,
    }


def quarantine_lines(report: Report) -> str:
    """Every image the report found unusable, as quarantine.jsonl lines."""
    import json

    return "".join(
        json.dumps(entry, sort_keys=True) + "\n"
        for split in report.splits.values()
        for entry in split.set_aside
    )


def check_runnable(report: Optional[Report]) -> None:
    """Raises DataError, in one line, when a split would be empty before any image is decoded:
    no image named, or none of the named ones there."""
    if report is None:
        return
    dataset = report.dataset
    for split, r in report.splits.items():
        source = os.path.join(dataset.root, dataset.sources[split])
        if r.images == 0:
            raise DataError(
                f"dataset.sources.{split}: {source} names no image; check the file, or the "
                "split's name (`litedet data inspect` shows what each split holds)"
            )
        if r.found == 0:
            folder = os.path.join(dataset.root, dataset.images_dir_for(split))
            where = (
                f"under {folder} (dataset.images_dirs.{split} or dataset.images_dir)"
                if dataset.format in ("coco", "voc")
                else "where the source names them"
            )
            raise DataError(
                f"split '{split}': none of its {r.images} images is there {where}, e.g. "
                f"{r.missing[0] if r.missing else '?'}; point the split at its image folder "
                "(`litedet data inspect` lists what is missing)"
            )


def print_report(report: Report) -> None:
    dataset = report.dataset
    print(f"{dataset.format} dataset at {dataset.root}")
    for split, r in report.splits.items():
        found = "" if r.found is None else f", {r.found} found"
        missing = "" if r.found is None else f", {len(r.missing)} missing"
        problems = f", {r.problems} set aside by the reader" if r.problems else ""
        print(f"  {split}: {r.images} images{found}{missing}{problems}, {r.objects} objects")
        for path in r.missing[:3]:
            print(f"    missing: {path}")
    print(f"  classes ({len(report.classes)}): {', '.join(report.classes)}")
