"""The UCR time-series archive: readers and the ``ucr/<Name>`` data sets (papers 000 §5.3, 001 §5.2.2).

Files live in ``<root>/UCR/<Name>/<Name>_{TRAIN,TEST}.{tsv,ts}``:

- UCR 2018 ``.tsv``: one series per line, the label in column 0, values tab-separated;
- sktime/aeon ``.ts``: ``#`` comments, ``@`` header lines (``@classLabel true 1 2``, ...), then after
  ``@data`` one series per line, values comma-separated and the label after the last ``:``.

Labels are mapped to 0..C−1 in the order of their values (numerically where every label is a
number), the same map for train and test. Series must be equally long and complete: a ragged
series, a missing value (``NaN``, ``?``) or an unreadable file raises a :class:`DataError` that
names the file and the line. No normalisation beyond the archive's own (the archive's series are
z-normalised already), as the authors did. ``load_ucr`` splits the training file into a seeded,
stratified 75 / 25 train / validation split; the curators' test file is the test set.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from .types import DataError, DataSplits, ImageSet, stratified_split

#: Share of each class of the training file kept for validation.
VAL_FRACTION = 0.25


def _parse_values(text: str, sep: str | None, path: Path, line_no: int) -> list[float]:
    try:
        values = [float(v) for v in (text.split(sep) if sep else text.split()) if v.strip() != ""]
    except ValueError:
        raise DataError(f"{path}, line {line_no}: a value is not a number ({text[:60]!r}...)") from None
    if any(math.isnan(v) for v in values):
        raise DataError(f"{path}, line {line_no}: the series has missing values (NaN): series with gaps are not "
                        "supported; pick a data set without missing values or impute them first")
    return values


def read_ucr_file(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """(series [N, L] float32, raw labels) of one UCR ``.tsv`` or ``.ts`` file."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path} cannot be read as a UCR text file ({type(err).__name__}: {err})") from None
    series, labels = [], []
    if path.suffix == ".ts":
        in_data = False
        for line_no, line in enumerate(lines, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            if not in_data:
                if text.lower().startswith("@data"):
                    in_data = True
                elif text.lower().startswith("@missing true"):
                    raise DataError(f"{path}, line {line_no}: the file declares missing values, which are not supported")
                continue
            if ":" not in text:
                raise DataError(f"{path}, line {line_no}: expected 'v1,v2,...:label' (one dimension and a label)")
            body, label = text.rsplit(":", 1)
            if ":" in body:
                raise DataError(f"{path}, line {line_no}: a multivariate series; only univariate series are supported")
            series.append(_parse_values(body.replace("?", "nan"), ",", path, line_no))
            labels.append(label.strip())
        if not in_data:
            raise DataError(f"{path}: no @data line: not a .ts file")
    elif path.suffix == ".tsv":
        for line_no, line in enumerate(lines, 1):
            if not line.strip():
                continue
            fields = line.replace("?", "nan").split("\t")
            labels.append(fields[0].strip())
            series.append(_parse_values("\t".join(fields[1:]), "\t", path, line_no))
    else:
        raise DataError(f"{path}: unknown UCR format {path.suffix!r}; expected .tsv (UCR 2018) or .ts (sktime/aeon)")
    if not series:
        raise DataError(f"{path} holds no series")
    lengths = {len(s) for s in series}
    if len(lengths) != 1:
        first = len(series[0])
        bad = next(i for i, s in enumerate(series) if len(s) != first)
        raise DataError(f"{path}: series of different lengths ({sorted(lengths)[:5]}; series {bad + 1} has "
                        f"{len(series[bad])} values, the first {first}): ragged series are not supported")
    return np.asarray(series, dtype=np.float32), labels


def label_map(*label_lists: list[str]) -> dict[str, int]:
    """Labels → 0..C−1, ordered by value (numerically where every label is a number)."""
    labels = sorted({label for labels in label_lists for label in labels})
    try:
        labels.sort(key=float)
    except ValueError:
        pass
    return {label: i for i, label in enumerate(labels)}


def ucr_files(root: Path, name: str) -> tuple[Path, Path]:
    """The (train, test) files of ``name`` under ``root/UCR/<name>/``, either format."""
    folder = root / "UCR" / name
    for suffix in (".tsv", ".ts"):
        train, test = folder / f"{name}_TRAIN{suffix}", folder / f"{name}_TEST{suffix}"
        if train.is_file() and test.is_file():
            return train, test
    available = sorted(p.name for p in (root / "UCR").iterdir() if p.is_dir()) if (root / "UCR").is_dir() else []
    raise DataError(f"UCR data set {name!r} not found: expected {folder}/{name}_TRAIN.tsv and _TEST.tsv (or .ts). "
                    f"Available under {root / 'UCR'}: {', '.join(f'ucr/{a}' for a in available) or 'none'}")


def load_ucr(name: str, root: Path, seed: int = 0, val_size: int | None = None, test_size: int | None = None) -> DataSplits:
    """``ucr/<name>`` as :class:`~pyro_pstn.data.types.DataSplits` of signals ``[N, 1, L]``."""
    train_file, test_file = ucr_files(root, name)
    return load_ucr_files(train_file, test_file, f"ucr/{name}", seed, val_size, test_size)


def load_ucr_path(path: str | os.PathLike, seed: int = 0, val_size: int | None = None,
                  test_size: int | None = None) -> DataSplits:
    """A UCR ``.tsv`` / ``.ts`` file at any path: ``X_TRAIN.tsv`` with its ``X_TEST.tsv`` beside it
    is that pair; any other file is split, seeded and stratified, into train and test
    (:data:`VAL_FRACTION` of each class for test) before the validation split."""
    path = Path(path)
    test = None
    for train_marker, test_marker in (("_TRAIN", "_TEST"), ("_train", "_test")):
        if path.stem.endswith(train_marker):
            candidate = path.with_name(path.stem.removesuffix(train_marker) + test_marker + path.suffix)
            test = candidate if candidate.is_file() else None
    return load_ucr_files(path, test, str(path), seed, val_size, test_size)


def load_ucr_files(train_file: Path, test_file: Path | None, name: str, seed: int = 0, val_size: int | None = None,
                   test_size: int | None = None) -> DataSplits:
    """Train (split into train / validation) and test series of one UCR data set; without a test
    file, a seeded stratified part of the training file is the test set."""
    x_train, y_train = read_ucr_file(train_file)
    if test_file is not None:
        x_test, y_test = read_ucr_file(test_file)
        if x_train.shape[1] != x_test.shape[1]:
            raise DataError(f"{name}: training series have {x_train.shape[1]} values, test series {x_test.shape[1]}")
        test_note = test_file.name
    else:
        x_test, y_test = x_train[:0], []
    classes = label_map(y_train)
    if len(classes) < 2:
        raise DataError(f"{train_file}: every series has the label {next(iter(classes))!r}; classification needs "
                        "at least two classes")
    unseen = sorted(set(y_test) - set(classes))
    if unseen:
        raise DataError(f"{test_file}: test label(s) {', '.join(map(repr, unseen[:5]))} never occur in {train_file.name}: "
                        "a classifier cannot predict a class it was not trained on. Remove those series, or add "
                        "training series of those classes")
    y_train = np.array([classes[v] for v in y_train])
    y_test = np.array([classes[v] for v in y_test], dtype=np.int64)
    if test_file is None:
        keep, held = stratified_split(y_train, seed + 10_000, VAL_FRACTION)
        x_test, y_test, x_train, y_train = x_train[held], y_train[held], x_train[keep], y_train[keep]
        test_note = f"a stratified {VAL_FRACTION:.0%} of {train_file.name} held out as test (seed {seed + 10_000})"
    train_idx, val_idx = stratified_split(y_train, seed, VAL_FRACTION)

    def to_set(x: torch.Tensor, y: torch.Tensor):
        return ImageSet(torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y.astype(np.int64)))

    return DataSplits(
        name=name, fold=seed,
        train=to_set(x_train[train_idx], y_train[train_idx]),
        val=to_set(x_train[val_idx][:val_size], y_train[val_idx][:val_size]),
        test=to_set(x_test[:test_size], y_test[:test_size]),
        num_classes=len(classes), mean=0.0, std=1.0,
        source=f"{train_file.name} (stratified {1 - VAL_FRACTION:.0%} / {VAL_FRACTION:.0%} split, seed {seed}) and "
               f"{test_note}",
    )
