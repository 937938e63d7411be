"""One site's arrays from an image folder (``class_name/*.png``) or an ``.npz`` file.

The image-folder layout is torchvision's ``ImageFolder``: one sub-folder per
class, named by the class. Class ids come from ``dataset.classes`` when it is
declared; otherwise from the site's sorted folder names, which the driver then
compares across sites (a site missing a class would otherwise shift every id).
Pixels become float32 in [0, 1], laid out (channels, height, width).
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from rayfed.data.schema import FileSource, encode_labels

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")


def _class_folders(root: str) -> list[str]:
    return sorted(d.name for d in os.scandir(root) if d.is_dir() and not d.name.startswith("."))


def _image_files(folder: str) -> list[str]:
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."))


def _pixels(path: str, src: FileSource) -> np.ndarray:
    from PIL import Image  # Pillow comes with matplotlib; only image sites need it

    with Image.open(path) as img:
        img = img.convert(src.image_mode)
        if src.image_size is not None:
            height, width = src.image_size
            img = img.resize((width, height), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.float32) / 255.0
    return arr[None, :, :] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def read_image_folder(root: str, src: FileSource, *,
                      where: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], list[str]]:
    """``(x, y, classes, problems)`` for the folder ``root``; see the module docstring."""
    folders = _class_folders(root)
    classes = tuple(src.classes) if src.classes else tuple(folders)
    problems = []
    unknown = [f for f in folders if f not in classes]
    if unknown:
        problems.append(f"{where} has class folder(s) {unknown} that are not in "
                        f"dataset.classes={list(classes)}; add them there or remove them")
    if not src.classes and src.num_classes is not None and len(folders) != src.num_classes:
        problems.append(f"{where} has {len(folders)} class folders {folders} but "
                        f"dataset.num_classes={src.num_classes}; declare dataset.classes")
    images, labels, shape = [], [], None
    for name in folders:
        if name in unknown:
            continue
        for path in _image_files(os.path.join(root, name)):
            try:
                arr = _pixels(path, src)
            except OSError as exc:
                problems.append(f"{where}: cannot read image {path} ({exc})")
                continue
            if shape is None:
                shape = arr.shape
            elif arr.shape != shape:
                problems.append(f"{where}: image {path} has shape {arr.shape}, the first "
                                f"image {shape}; set dataset.image_size=[height,width]")
                continue
            images.append(arr)
            labels.append(name)
    if not images and not problems:
        problems.append(f"{where} holds no images ({', '.join(IMAGE_EXTENSIONS)}) in "
                        "class sub-folders; the layout is <path>/<class_name>/<image>")
    labelled = FileSource(train_path=src.train_path, classes=classes)
    y, label_problems = encode_labels(labels, labelled, where=where, column="<class folder>")
    x = np.stack(images) if images else np.zeros((0, 0), np.float32)
    return x, y, classes, problems + label_problems


def read_npz(path: str, src: FileSource, *,
             where: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(x, y, problems)`` from arrays ``x`` (examples first) and ``y`` (labels)."""
    empty = np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    try:
        # allow_pickle=False: a site's file must not be able to run code in the actor.
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("x", "y") if k not in data.files]
            if missing:
                return (*empty, [f"{where} lacks array(s) {missing} (it has {data.files}); "
                                 "save it with np.savez(path, x=features, y=labels)"])
            x, y_raw = data["x"], data["y"]
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        return (*empty, [f"{where}: cannot read it as npz ({exc}); save plain numeric "
                         "arrays with np.savez(path, x=features, y=labels)"])
    problems = []
    if y_raw.ndim != 1 or x.shape[:1] != y_raw.shape:
        problems.append(f"{where}: y must be 1-D with one label per row of x (got x "
                        f"{x.shape}, y {y_raw.shape})")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        problems.append(f"{where}: x has dtype {x.dtype}; it must be numeric")
    if problems:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64), problems
    # Integer labels are class ids even when dataset.classes names the classes.
    ids = (FileSource(train_path=src.train_path, num_classes=src.num_labels)
           if np.issubdtype(y_raw.dtype, np.integer) else src)
    y, label_problems = encode_labels(y_raw.tolist(), ids, where=where, column="y")
    return x.astype(np.float32, copy=False), y, label_problems
