"""Reads PyTorch `torch.save` files (state dicts) without importing torch.

Two on-disk formats exist:
  * zip (torch >= 1.6): `<name>/data.pkl` is a pickle whose tensors refer to
    raw storages `<name>/data/<key>` by a persistent id
    ('storage', storage_type, key, location, numel); `<name>/byteorder`
    says 'little' or 'big' (absent: little);
  * legacy (what torchvision's 2017 model files use): five concatenated
    pickles, the magic number 0x1950a86a20f9469cfc6c, the protocol version
    1001, a sys_info dict, the object (persistent ids
    ('storage', storage_type, key, location, numel, view_metadata)), and the
    list of storage keys; then, per key in that order, an int64 element count
    followed by the raw little-endian elements.
A tensor is pickled as `torch._utils._rebuild_tensor_v2(storage, offset,
size, stride, requires_grad, backward_hooks)` (`_rebuild_tensor` without the
last two before torch 0.4).

Unpickling executes whatever callables a pickle names, so this reader never
uses the general machinery: `find_class` resolves only the handful of globals
a state dict needs, to stand-ins defined here that build numpy arrays, and
refuses every other global with PortError. Strides and offsets are checked
against the storage size before any view is taken.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import os
import pickle
import struct
import zipfile
from typing import Any

import numpy as np

from inverter.port.common import PortError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
# pickle protocol 2, LONG1 with 10 bytes: how every legacy file begins.
_LEGACY_PREFIX = b"\x80\x02\x8a\x0a" + LEGACY_MAGIC.to_bytes(10, "little")
_ZIP_PREFIX = b"PK\x03\x04"

_BFLOAT16 = "bfloat16"
STORAGE_DTYPES = {
    "FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2",
    "BFloat16Storage": _BFLOAT16, "LongStorage": "i8", "IntStorage": "i4",
    "ShortStorage": "i2", "CharStorage": "i1", "ByteStorage": "u1",
    "BoolStorage": "?", "UntypedStorage": "u1",
}

_RESAVE = ("only state dicts (dicts of tensors) are read; in PyTorch, save"
           " one with torch.save(model.state_dict(), path).")


# The stand-ins are slotted (no __dict__) and frozen, so a pickle's BUILD
# opcode cannot rewrite them after their checks.
@dataclasses.dataclass(frozen=True, slots=True)
class _StorageType:
  """Stand-in for `torch.FloatStorage` etc.: a name and an element type."""
  name: str

  @property
  def raw_dtype(self) -> str:
    return STORAGE_DTYPES[self.name]

  @property
  def itemsize(self) -> int:
    raw = self.raw_dtype
    return 2 if raw == _BFLOAT16 else np.dtype(raw).itemsize


class _Storage:
  """One storage: its type and, once read, its elements (1-D numpy).

  A legacy view (`root` set) is `numel` elements of `root` from `start`.
  """

  __slots__ = ("stype", "key", "numel", "root", "start", "_array")

  def __init__(self, stype: _StorageType, key: str, numel: int,
               root: _Storage | None = None, start: int = 0):
    self.stype, self.key, self.numel = stype, key, numel
    self.root, self.start = root, start
    self._array: np.ndarray | None = None

  @property
  def array(self) -> np.ndarray | None:
    if self.root is None:
      return self._array
    base = self.root.array
    if base is None:
      return None
    if self.start < 0 or self.start + self.numel > base.size:
      raise PortError(f"Storage view {self.key} reaches past its storage.")
    return base[self.start:self.start + self.numel]

  def fill(self, raw: bytes, byteorder: str, where: str) -> None:
    if len(raw) != self.numel * self.stype.itemsize:
      raise PortError(
          f"{where}: storage {self.key} holds {len(raw)} bytes, expected"
          f" {self.numel} x {self.stype.itemsize} ({self.stype.name}); the"
          " file is damaged or truncated.")
    self._array = _decode(raw, self.stype.raw_dtype, byteorder)


def _decode(raw: bytes, raw_dtype: str, byteorder: str) -> np.ndarray:
  end = "<" if byteorder == "little" else ">"
  if raw_dtype == _BFLOAT16:
    bits = np.frombuffer(raw, end + "u2").astype(np.uint32) << 16
    return bits.view(np.float32)
  native = np.dtype(raw_dtype)
  return np.frombuffer(raw, native.newbyteorder(end)).astype(native,
                                                               copy=False)


@dataclasses.dataclass(frozen=True, slots=True)
class _Tensor:
  """A tensor as pickled: a view into a storage read later."""
  storage: _Storage
  offset: int
  size: tuple[int, ...]
  stride: tuple[int, ...]

  def materialise(self, where: str) -> np.ndarray:
    data = self.storage.array
    if data is None:
      raise PortError(f"{where}: storage {self.storage.key} was never"
                      " written; the file is damaged or truncated.")
    if any(s == 0 for s in self.size):
      return np.zeros(self.size, data.dtype)
    # Re-checked here: the view must stay inside the storage's memory.
    _ints(self.size + self.stride + (self.offset,), "geometry")
    if min(self.size + self.stride + (self.offset,)) < 0:
      raise PortError(f"{where}: negative tensor size or stride.")
    last = self.offset + sum((n - 1) * s for n, s in zip(self.size,
                                                         self.stride))
    if last >= data.size:
      raise PortError(
          f"{where}: a tensor of size {self.size}, stride {self.stride} at"
          f" offset {self.offset} reaches past its storage of {data.size}"
          " elements; the file is damaged.")
    view = np.lib.stride_tricks.as_strided(
        data[self.offset:], shape=self.size,
        strides=[s * data.itemsize for s in self.stride], writeable=False)
    # A C-contiguous copy, independent of the storage.
    return np.array(view, order="C")


def _ints(value: Any, what: str) -> tuple[int, ...]:
  if not isinstance(value, (tuple, list)) or not all(
      isinstance(v, int) and not isinstance(v, bool) for v in value):
    raise PortError(f"Tensor {what} must be a tuple of ints, got {value!r}.")
  return tuple(value)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
  """Stand-in for torch._utils._rebuild_tensor(_v2)."""
  del unused  # requires_grad, backward_hooks, metadata: irrelevant here.
  if not isinstance(storage, _Storage) or not isinstance(storage_offset, int):
    raise PortError("A pickled tensor does not reference a storage; " + _RESAVE)
  size, stride = _ints(size, "size"), _ints(stride, "stride")
  if len(size) != len(stride) or any(s < 0 for s in size + stride):
    raise PortError(f"Invalid tensor geometry size={size} stride={stride}.")
  return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *unused):
  """Stand-in for torch._utils._rebuild_parameter: a Parameter's data."""
  del unused
  if not isinstance(data, _Tensor):
    raise PortError("A pickled Parameter does not hold a tensor.")
  return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _Unpickler(pickle.Unpickler):
  """Unpickles only state dicts; storages come from `storages`."""

  def __init__(self, file, where: str, storages: dict[str, _Storage] | None):
    super().__init__(file, encoding="utf-8")
    self.where = where
    self.storages = storages

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) in _ALLOWED:
      return _ALLOWED[(module, name)]
    if module == "torch" and name in STORAGE_DTYPES:
      return _StorageType(name)
    raise PortError(
        f"{self.where}: refusing to unpickle the global {module}.{name}"
        " (pickles can run arbitrary code, so only tensors, storages and"
        f" OrderedDict are allowed); {_RESAVE}")

  def persistent_load(self, pid: Any) -> Any:
    if self.storages is None:
      raise PortError(f"{self.where}: unexpected persistent id {pid!r}.")
    if (not isinstance(pid, tuple) or len(pid) not in (5, 6)
        or pid[0] != "storage" or not isinstance(pid[1], _StorageType)
        or not isinstance(pid[4], int)):
      raise PortError(f"{self.where}: unsupported persistent id {pid!r};"
                      f" {_RESAVE}")
    stype, key, numel = pid[1], str(pid[2]), pid[4]
    storage = self.storages.get(key)
    if storage is None:
      storage = self.storages[key] = _Storage(stype, key, numel)
    elif storage.stype != stype:
      raise PortError(f"{self.where}: storage {key} is read as both"
                      f" {storage.stype.name} and {stype.name}.")
    view = pid[5] if len(pid) == 6 else None
    if view is None:
      return storage
    # (view_key, offset, numel): a pre-0.4 view into the storage.
    if (not isinstance(view, tuple) or len(view) != 3
        or not all(isinstance(v, int) for v in view[1:])):
      raise PortError(f"{self.where}: invalid storage view {view!r}.")
    return _Storage(stype, str(view[0]), view[2], root=storage, start=view[1])


def _materialise(obj: Any, where: str) -> Any:
  if isinstance(obj, _Tensor):
    return obj.materialise(where)
  if isinstance(obj, dict):
    return type(obj)((k, _materialise(v, where)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialise(v, where) for v in obj)
  if isinstance(obj, _Storage):
    raise PortError(f"{where}: holds a bare storage, not tensors; {_RESAVE}")
  return obj


def sniff(path: str | os.PathLike[str]) -> bool:
  """True if `path` looks like a torch.save file (zip with data.pkl, or the
  legacy format)."""
  try:
    with open(path, "rb") as f:
      head = f.read(len(_LEGACY_PREFIX))
  except OSError:
    return False
  if head.startswith(_LEGACY_PREFIX):
    return True
  if head.startswith(_ZIP_PREFIX):
    try:
      with zipfile.ZipFile(path) as z:
        return any(n.endswith("data.pkl") for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
      return False
  return False


def _load_zip(path: str) -> Any:
  where = os.fspath(path)
  try:
    with zipfile.ZipFile(path) as z:
      names = z.namelist()
      pickles = [n for n in names if n.endswith("data.pkl")
                 and n.count("/") == 1]
      if len(pickles) != 1:
        raise PortError(
            f"{where} is a zip archive but not a torch.save file (expected"
            f" one <name>/data.pkl, found {len(pickles)}); TorchScript"
            " archives (torch.jit.save) are not supported.")
      prefix = pickles[0][:-len("data.pkl")]
      byteorder = "little"
      if prefix + "byteorder" in names:
        byteorder = z.read(prefix + "byteorder").decode("ascii", "replace")
        if byteorder not in ("little", "big"):
          raise PortError(f"{where}: unknown byteorder {byteorder!r}.")
      storages: dict[str, _Storage] = {}
      obj = _Unpickler(io.BytesIO(z.read(pickles[0])), where, storages).load()
      for key, storage in storages.items():
        entry = f"{prefix}data/{key}"
        if entry not in names:
          raise PortError(f"{where}: storage {entry} is missing.")
        storage.fill(z.read(entry), byteorder, where)
  except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError,
          zipfile.LargeZipFile, ValueError, KeyError, TypeError,
          AttributeError, IndexError) as e:
    if isinstance(e, PortError):
      raise
    raise PortError(f"{where} is damaged or truncated (reading the torch zip"
                    f" archive failed: {e}); download it again.") from e
  return _materialise(obj, where)


def _load_legacy(path: str) -> Any:
  where = os.fspath(path)
  with open(path, "rb") as f:
    return _read_legacy(f, where)


def _read_legacy(f: io.BufferedReader, where: str) -> Any:
  try:
    magic = _Unpickler(f, where, None).load()
    if magic != LEGACY_MAGIC:
      raise PortError(f"{where}: not a torch.save file (bad magic number).")
    protocol = _Unpickler(f, where, None).load()
    if protocol != LEGACY_PROTOCOL:
      raise PortError(f"{where}: unsupported torch.save protocol {protocol}.")
    sys_info = _Unpickler(f, where, None).load()
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
      raise PortError(f"{where} was written on a big-endian machine; re-save"
                      " it on a little-endian one.")
    storages: dict[str, _Storage] = {}
    obj = _Unpickler(f, where, storages).load()
    keys = _Unpickler(f, where, None).load()
    if not isinstance(keys, list):
      raise PortError(f"{where}: the storage key list is missing.")
    for key in keys:
      key = str(key)
      if key not in storages:
        raise PortError(f"{where}: storage {key} is listed but unused.")
      storage = storages[key]
      header = f.read(8)
      if len(header) != 8:
        raise EOFError("storage header")
      (numel,) = struct.unpack("<q", header)
      if numel != storage.numel:
        raise PortError(f"{where}: storage {key} has {numel} elements on"
                        f" disk, {storage.numel} in the pickle.")
      storage.fill(f.read(numel * storage.stype.itemsize), "little", where)
  except (EOFError, pickle.UnpicklingError, ValueError, struct.error,
          KeyError, TypeError, AttributeError, IndexError) as e:
    if isinstance(e, PortError):
      raise
    raise PortError(f"{where} is damaged or truncated (reading the legacy"
                    f" torch.save format failed: {e!r}); download it"
                    " again.") from e
  return _materialise(obj, where)


def load(path: str | os.PathLike[str]) -> Any:
  """The object a torch.save file holds, tensors as numpy arrays."""
  path = os.fspath(path)
  try:
    with open(path, "rb") as f:
      head = f.read(512)
  except OSError as e:
    raise PortError(f"Cannot read {path}: {e}") from e
  if head.startswith(_ZIP_PREFIX):
    return _load_zip(path)
  if head.startswith(_LEGACY_PREFIX):
    return _load_legacy(path)
  if len(head) >= 262 and head[257:262] == b"ustar":
    raise PortError(f"{path} is in PyTorch's pre-0.1.10 tar format, which is"
                    " not supported; load and re-save it with a current"
                    " torch.save.")
  raise PortError(f"{path} is not a torch.save file (neither a zip archive"
                  " nor the legacy pickle format).")


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
  """{parameter name: numpy array} from a .pth state dict.

  Accepts a bare state dict, or a checkpoint dict holding one under
  'state_dict' or 'model'.
  """
  obj = load(path)
  if isinstance(obj, dict) and not _all_arrays(obj):
    for key in ("state_dict", "model"):
      if isinstance(obj.get(key), dict) and _all_arrays(obj[key]):
        obj = obj[key]
        break
  if not isinstance(obj, dict) or not _all_arrays(obj):
    raise PortError(f"{os.fspath(path)} does not hold a state dict of"
                    f" tensors; {_RESAVE}")
  return dict(obj)


def _all_arrays(d: dict) -> bool:
  return bool(d) and all(isinstance(k, str) and isinstance(v, np.ndarray)
                         for k, v in d.items())
