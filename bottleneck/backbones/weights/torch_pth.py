"""Torch-free reader for PyTorch ``.pth`` state dicts (legacy and zip formats) into NumPy arrays.

Only the standard library and NumPy: a restricted unpickler that resolves nothing but the tensor-rebuild
functions, storage classes and ``collections.OrderedDict``, so a malicious file cannot run code.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from bottleneck.errors import BackboneError

# torch.save's legacy (non-zip) format opens with these three pickles.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# Storage class name -> element dtype (little-endian; byte order is fixed up per file).
STORAGE_DTYPES = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "BFloat16Storage": "<u2",  # NumPy has no bfloat16: read the bits, widen to float32 afterwards
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "<i1",
    "ByteStorage": "<u1",
    "BoolStorage": "|b1",
    "UntypedStorage": "<u1",
}


class _StorageType:
    """Stands in for ``torch.FloatStorage`` etc.: only carries the element dtype."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = np.dtype(STORAGE_DTYPES[name])


class _Storage:
    """A flat buffer of ``numel`` elements; ``data`` is filled once the raw bytes are read."""

    def __init__(self, key: str, stype: _StorageType, numel: int):
        self.key, self.stype, self.numel = key, stype, int(numel)
        self.data: np.ndarray | None = None
        self.root: _Storage | None = None  # set for legacy storage views
        self.offset = 0


class _TensorRef:
    """What ``_rebuild_tensor_v2`` returns during unpickling; made into an array after the storages are read."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _rebuild_tensor_v2(
    storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None
):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data  # an nn.Parameter is its tensor as far as the weights go


# (module, name) -> object. Everything else is refused. Nothing here can call back into arbitrary code.
_ALLOWED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
    ("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path, storages: dict, load_zip_storage=None):
        super().__init__(file, encoding="latin1")
        self._path, self._storages, self._load_zip_storage = path, storages, load_zip_storage

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise BackboneError(
                f"{self._path} asks to load {module}.{name}, which a weights file never needs; refusing it "
                "(only tensors, storages and OrderedDict are allowed). The file may be malicious or not a "
                "plain state dict: re-save it with torch.save(model.state_dict(), path)."
            ) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] in ("storage", b"storage")):
            raise BackboneError(
                f"{self._path}: unexpected persistent id {pid!r:.80}; not a torch state dict."
            )
        if len(pid) == 6:  # legacy: (tag, type, key, location, numel, view_metadata)
            _, stype, key, _location, numel, view = pid
        elif len(pid) == 5:  # zip: (tag, type, key, location, numel)
            _, stype, key, _location, numel = pid
            view = None
        else:
            raise BackboneError(f"{self._path}: malformed storage id {pid!r:.80}.")
        if not isinstance(stype, _StorageType) or not isinstance(numel, int) or numel < 0:
            raise BackboneError(f"{self._path}: malformed storage id {pid!r:.80}.")
        key = str(key)
        storage = self._storages.get(key)
        if storage is None:
            storage = self._storages[key] = _Storage(key, stype, numel)
            if self._load_zip_storage is not None:
                storage.data = self._load_zip_storage(key, stype.dtype, numel)
        if view is not None:
            view_key, offset, view_numel = view
            sub = _Storage(str(view_key), stype, view_numel)
            sub.root, sub.offset = storage, int(offset)
            return sub
        return storage


def _materialize(obj, path: Path):
    """Replace every _TensorRef in a (nested) container by a C-contiguous array of native byte order."""
    if isinstance(obj, _TensorRef):
        return _tensor_to_array(obj, path)
    if isinstance(obj, dict):
        out = OrderedDict() if isinstance(obj, OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _materialize(v, path)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(v, path) for v in obj)
    return obj


def _tensor_to_array(ref: _TensorRef, path: Path) -> np.ndarray:
    storage = ref.storage
    if not isinstance(storage, _Storage):
        raise BackboneError(f"{path}: a tensor without a storage; not a torch state dict.")
    base_offset = 0
    if storage.root is not None:
        base_offset, storage = storage.offset, storage.root
    if storage.data is None:
        raise BackboneError(f"{path}: storage {storage.key} has no data; the file is truncated or corrupt.")
    offset, size, stride = ref.offset, ref.size, ref.stride
    ok = (
        isinstance(offset, int)
        and isinstance(size, (tuple, list))
        and isinstance(stride, (tuple, list))
        and len(size) == len(stride)
        and all(isinstance(v, int) and v >= 0 for v in (offset, *size, *stride))
    )
    if not ok:
        raise BackboneError(f"{path}: malformed tensor (offset {offset!r:.40}, size {size!r:.60}).")
    start = base_offset + offset
    if 0 in size:
        arr = np.empty(size, storage.data.dtype)
    else:
        # Bounds check before as_strided, which would otherwise read outside the buffer.
        last = start + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if last >= storage.data.size:
            raise BackboneError(
                f"{path}: a tensor of size {tuple(size)} reaches element {last} of a storage of "
                f"{storage.data.size}; the file is corrupt."
            )
        item = storage.data.itemsize
        arr = np.lib.stride_tricks.as_strided(
            storage.data[start:], shape=tuple(size), strides=tuple(s * item for s in stride), writeable=False
        )
    arr = np.array(arr, order="C")  # an owned copy (np.ascontiguousarray would turn 0-d into 1-d)
    if storage.stype.name == "BFloat16Storage":
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(arr.dtype.newbyteorder("="), copy=False)


def _read_legacy(fh, path: Path):
    def load_plain():
        # The header pickles hold only ints, dicts and strings: refuse every global there too.
        return _RestrictedUnpickler(fh, path, {}).load()

    try:
        magic = load_plain()
    except BackboneError:
        raise
    except Exception:
        raise BackboneError(
            f"{path} is not a PyTorch .pth file (neither zip nor legacy format); pass the .pth state dict."
        ) from None
    if magic != LEGACY_MAGIC:
        raise BackboneError(
            f"{path} is not a PyTorch .pth file (bad magic number); pass the .pth state dict."
        )
    protocol = load_plain()
    if protocol != LEGACY_PROTOCOL:
        raise BackboneError(
            f"{path}: unsupported legacy torch protocol {protocol!r}; expected {LEGACY_PROTOCOL}."
        )
    sys_info = load_plain()
    little = bool(sys_info.get("little_endian", True)) if isinstance(sys_info, dict) else True
    storages: dict[str, _Storage] = {}
    result = _RestrictedUnpickler(fh, path, storages).load()
    keys = load_plain()
    size = os.fstat(fh.fileno()).st_size
    if not isinstance(keys, list):
        raise BackboneError(f"{path}: malformed storage key list; the file is corrupt.")
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise BackboneError(f"{path}: data for unknown storage {key!r}; the file is corrupt.")
        header = fh.read(8)
        if len(header) < 8:
            raise BackboneError(f"{path} is truncated (storage {key} missing); download or copy it again.")
        (numel,) = struct.unpack("<q" if little else ">q", header)
        if numel != storage.numel:
            raise BackboneError(
                f"{path}: storage {key} holds {numel} elements but the pickle says {storage.numel}; corrupt file."
            )
        dtype = storage.stype.dtype if little else storage.stype.dtype.newbyteorder(">")
        nbytes = numel * dtype.itemsize
        # Checked before reading, so a crafted size cannot make us allocate more than the file holds.
        if nbytes > size - fh.tell():
            raise BackboneError(f"{path} is truncated (storage {key} incomplete); download or copy it again.")
        raw = fh.read(nbytes)
        if len(raw) < nbytes:
            raise BackboneError(f"{path} is truncated (storage {key} incomplete); download or copy it again.")
        storage.data = np.frombuffer(raw, dtype=dtype)
    return result


def _read_zip(path: Path):
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise BackboneError(f"{path} is a zip file but not a torch checkpoint (no <name>/data.pkl).")
        prefix = pkl[0][: -len("data.pkl")]
        order = "little"
        if prefix + "byteorder" in names:
            order = zf.read(prefix + "byteorder").decode("ascii", "replace").strip()

        def load_storage(key: str, dtype: np.dtype, numel: int) -> np.ndarray:
            name = f"{prefix}data/{key}"
            if name not in names:
                raise BackboneError(f"{path}: storage {key} is missing from the archive; corrupt file.")
            dt = dtype if order == "little" else dtype.newbyteorder(">")
            # Size checked before reading, so a crafted entry cannot inflate into more memory than declared.
            stored = zf.getinfo(name).file_size
            if stored != numel * dt.itemsize:
                raise BackboneError(
                    f"{path}: storage {key} has {stored} bytes, expected {numel * dt.itemsize}; corrupt file."
                )
            return np.frombuffer(zf.read(name), dtype=dt)

        storages: dict[str, _Storage] = {}
        return _RestrictedUnpickler(io.BytesIO(zf.read(pkl[0])), path, storages, load_storage).load()


def load_pth(path) -> object:
    """Read a torch-saved object of tensors; every tensor becomes a NumPy array (native byte order).

    Works on both the zip format (torch >= 1.6) and the legacy stream of pickles plus raw storages.
    Raises BackboneError on anything but tensors, storages, containers and OrderedDict.
    """
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"weights file {path} does not exist; pass the path of a .pth state dict.")
    if zipfile.is_zipfile(path):
        result = _read_zip(path)
    else:
        with open(path, "rb") as fh:
            result = _read_legacy(fh, path)
    return _materialize(result, path)


def load_state_dict(path) -> OrderedDict[str, np.ndarray]:
    """The flat ``name -> array`` state dict in a .pth file, in file order.

    A checkpoint that wraps it as ``{"state_dict": ...}`` or ``{"model": ...}`` is unwrapped.
    """
    obj = load_pth(path)
    if isinstance(obj, dict) and len(obj) == 1:
        (only,) = obj.values()
        if isinstance(only, dict) and next(iter(obj)) in ("state_dict", "model"):
            obj = only
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in obj.items()
    ):
        raise BackboneError(
            f"{path} does not hold a flat state dict of tensors; save it with torch.save(model.state_dict(), path)."
        )
    return OrderedDict(obj)
