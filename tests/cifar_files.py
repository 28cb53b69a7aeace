"""Tiny CIFAR-10/100 folders in the real python-pickle layout, for tests of the
real loaders (torchvision's CIFAR10/CIFAR100 classes read them; nothing is
downloaded). ``trust_checksums`` gives torchvision the md5 sums of the tiny
files, which it checks like the official ones."""
import hashlib
import io
import pickle

import numpy as np

TRAIN_LABELS = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1], [2, 3, 4, 5], [6, 7, 8, 9]]
TEST_LABELS = [0, 0, 0, 0, 1, 2, 3, 4, 5, 6]  # 40% zeros
RED, GREEN, BLUE = 255, 0, 128  # every pixel of the first test image


class Py2Str(bytes):
    """A Python 2 ``str`` in a pickle (opcode SHORT_BINSTRING), as the CIFAR
    files hold their keys: it loads as ``str`` with ``encoding="latin1"`` (what
    torchvision uses) and as ``bytes`` with ``encoding="bytes"``."""


class _Py2Pickler(pickle._Pickler):
    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2str(self, obj):
        self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + bytes(obj))
        self.memoize(obj)

    dispatch[Py2Str] = save_py2str


def _dump(path, document):
    """Pickle ``document`` with protocol 2 as the CIFAR authors did (Python 2 keys)."""
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(document)
    path.write_bytes(buffer.getvalue())


def _images(n, seed):
    """``n`` CIFAR rows: uint8 [n, 3072], 1024 red then 1024 green then 1024 blue values."""
    return np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)


def _batch(labels, seed, key=b"labels", **extra):
    return {Py2Str(b"batch_label"): Py2Str(b"tiny batch"), Py2Str(key): list(labels),
            Py2Str(b"data"): _images(len(labels), seed),
            Py2Str(b"filenames"): [Py2Str(b"img_%d.png" % i) for i in range(len(labels))],
            **{Py2Str(k.encode()): v for k, v in extra.items()}}


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def trust_checksums(monkeypatch, cls, folder):
    """Give torchvision's class the md5 sums of our tiny files (it checks them)."""
    monkeypatch.setattr(cls, "train_list", [[n, _md5(folder / n)] for n, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[n, _md5(folder / n)] for n, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": _md5(folder / cls.meta["filename"])})


def write_cifar10(root, train_labels=TRAIN_LABELS, test_labels=TEST_LABELS):
    """The python CIFAR-10 layout: 5 train batches (by default of 4 images each),
    a test batch (by default of 10: the first one all RED, GREEN, BLUE)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for number, labels in enumerate(train_labels, start=1):
        _dump(folder / f"data_batch_{number}", _batch(labels, seed=number))
    test = _batch(test_labels, seed=0)
    test[b"data"][0] = [RED] * 1024 + [GREEN] * 1024 + [BLUE] * 1024
    _dump(folder / "test_batch", test)
    names = [Py2Str(n) for n in (b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog",
                                  b"horse", b"ship", b"truck")]
    _dump(folder / "batches.meta", {Py2Str(b"label_names"): names, Py2Str(b"num_cases_per_batch"): 4,
                                    Py2Str(b"num_vis"): 3072})
    return folder


def write_cifar100(root, train_labels=range(0, 96, 8), test_labels=(99, 5, 5, 0, 42, 7)):
    """The python CIFAR-100 layout: train (by default 12 images), test (6), meta."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, labels, seed in (("train", train_labels, 1), ("test", list(test_labels), 2)):
        _dump(folder / name, _batch(labels, seed, key=b"fine_labels",
                                    coarse_labels=[label // 5 for label in labels]))
    _dump(folder / "meta", {Py2Str(b"fine_label_names"): [Py2Str(b"c%d" % i) for i in range(100)],
                            Py2Str(b"coarse_label_names"): [Py2Str(b"s%d" % i) for i in range(20)]})
    return folder


