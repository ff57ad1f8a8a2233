"""Read a PyTorch state dict (legacy pickle format, or the zip format) into
numpy arrays without installing torch (a multi-gigabyte wheel) just to read
~2 MB of weights.

Legacy layout: pickle(magic), pickle(protocol), pickle(sys_info), the object
pickle whose tensors refer to storages by persistent id, pickle(storage keys),
then each storage as an int64 element count followed by raw little-endian data.
"""

import collections
import pickle
import zipfile

import numpy as np

DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
          "LongStorage": np.int64, "IntStorage": np.int32, "ByteStorage": np.uint8}


class _StorageType:
    def __init__(self, name):
        self.dtype = DTYPES[name]


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


def _rebuild_tensor_v2(storage, offset, size, stride, *_):
    return _Tensor(storage, offset, size, stride)


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch" and name in DTYPES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel[, view_metadata])
        return ("storage", pid[1].dtype, str(pid[2]))


def _materialise(obj, storages):
    if isinstance(obj, dict):
        return collections.OrderedDict((k, _materialise(v, storages)) for k, v in obj.items())
    if isinstance(obj, _Tensor):
        _, dtype, key = obj.storage
        flat = storages[key]
        item = np.dtype(dtype).itemsize
        return np.lib.stride_tricks.as_strided(
            flat[obj.offset:], shape=obj.size, strides=[s * item for s in obj.stride]).copy()
    return obj


def load_state_dict(path):
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            prefix = z.namelist()[0].split("/")[0]
            up = _Unpickler(z.open(f"{prefix}/data.pkl"))
            obj = up.load()
            keys = set()

            def collect(o):
                if isinstance(o, dict):
                    for v in o.values():
                        collect(v)
                elif isinstance(o, _Tensor):
                    keys.add((o.storage[2], o.storage[1]))
            collect(obj)
            storages = {k: np.frombuffer(z.read(f"{prefix}/data/{k}"), dtype=d) for k, d in keys}
            return _materialise(obj, storages)
    with open(path, "rb") as f:
        pickle.load(f)  # magic number
        pickle.load(f)  # protocol version
        pickle.load(f)  # sys info
        obj = _Unpickler(f).load()
        keys = pickle.load(f)
        dtypes = {}

        def collect(o):
            if isinstance(o, dict):
                for v in o.values():
                    collect(v)
            elif isinstance(o, _Tensor):
                dtypes[o.storage[2]] = o.storage[1]
        collect(obj)
        storages = {}
        for key in keys:
            n = int(np.frombuffer(f.read(8), dtype="<i8")[0])
            dt = np.dtype(dtypes[key])
            storages[key] = np.frombuffer(f.read(n * dt.itemsize), dtype=dt)
        return _materialise(obj, storages)
