"""Tests of core.io: micrographs (MRC), atomic writes, listing and pairing files, imports."""

import os
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from napari_deeppicker.core import io
from napari_deeppicker.core.errors import CoordinatesError, MicrographError

REAL = Path("/work/shared/data/real")
BETAGAL = REAL / "EMPIAR-10017-betagal"
RIBOSOME = REAL / "EMPIAR-10028-ribosome"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="real data not available")


def _image(shape=(40, 50), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _write_mrc(path, data, voxel_size=None):
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
        if voxel_size is not None:
            mrc.voxel_size = voxel_size
    return path


# --- micrographs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "mode"),
    [(np.int8, 0), (np.int16, 1), (np.float32, 2), (np.uint16, 6), (np.float16, 12)],
)
def test_read_every_mode(tmp_path, dtype, mode):
    data = (np.arange(48 * 30).reshape(48, 30) % 97).astype(dtype)
    path = _write_mrc(tmp_path / "m.mrc", data, voxel_size=1.5)
    with mrcfile.open(path) as mrc:
        assert int(mrc.header.mode) == mode
    mic = io.read_micrograph(path)
    assert mic.data.dtype == np.float32 and mic.data.shape == (48, 30)
    np.testing.assert_array_equal(mic.data, data.astype(np.float32))
    assert mic.pixel_size == 1.5 and mic.name == "m" and mic.path == path


def test_mode0_unsigned_imod_flag(tmp_path):
    values = np.array([[0, 100, 200, 255]] * 4, dtype=np.uint8)
    path = _write_mrc(tmp_path / "u.mrc", values.view(np.int8))
    signed = values.view(np.int8).astype(np.float32)
    np.testing.assert_array_equal(io.read_micrograph(path).data, signed)
    raw = bytearray(path.read_bytes())
    raw[152:160] = np.array([1146047817, 1], dtype="<i4").tobytes()  # IMOD stamp + unsigned flag
    path.write_bytes(bytes(raw))
    np.testing.assert_array_equal(io.read_micrograph(path).data, values.astype(np.float32))


def test_single_section_3d_is_squeezed_and_stack_is_rejected(tmp_path):
    data = _image((1, 20, 30))
    mic = io.read_micrograph(_write_mrc(tmp_path / "one.mrc", data))
    assert mic.data.shape == (20, 30)
    np.testing.assert_array_equal(mic.data, data[0])
    _write_mrc(tmp_path / "three.mrc", _image((3, 20, 30)))
    with pytest.raises(MicrographError, match=r"three\.mrc.*stack of 3 sections"):
        io.read_micrograph(tmp_path / "three.mrc")


def test_pixel_size_none_when_zero(tmp_path):
    assert io.read_micrograph(_write_mrc(tmp_path / "a.mrc", _image())).pixel_size is None


def test_small_files_are_writable_copies(tmp_path):
    path = _write_mrc(tmp_path / "a.mrc", _image())
    for mmap in (True, False):
        data = io.read_micrograph(path, mmap=mmap).data
        assert not isinstance(data, np.memmap) and data.flags.writeable


def test_large_float32_is_a_read_only_memmap(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "MMAP_MIN_BYTES", 0)
    data = _image()
    mic = io.read_micrograph(_write_mrc(tmp_path / "big.mrc", data))
    assert isinstance(mic.data, np.memmap) and not mic.data.flags.writeable
    np.testing.assert_array_equal(mic.data, data)
    converted = io.read_micrograph(_write_mrc(tmp_path / "int.mrc", (data * 100).astype(np.int16)))
    assert converted.data.dtype == np.float32 and not isinstance(converted.data, np.memmap)
    no_mmap = io.read_micrograph(tmp_path / "big.mrc", mmap=False)
    assert not isinstance(no_mmap.data, np.memmap) and no_mmap.data.flags.writeable
    io.write_micrograph(tmp_path / "big.mrc.gz", data)
    unzipped = io.read_micrograph(tmp_path / "big.mrc.gz")
    assert not unzipped.data.flags.writeable and not unzipped.data.flags.owndata  # not copied
    np.testing.assert_array_equal(unzipped.data, data)


def test_write_read_gzip_and_stack(tmp_path):
    data = _image()
    io.write_micrograph(tmp_path / "a.mrc.gz", data, pixel_size=2.5)
    assert (tmp_path / "a.mrc.gz").read_bytes()[:2] == b"\x1f\x8b"
    mic = io.read_micrograph(tmp_path / "a.mrc.gz")
    np.testing.assert_array_equal(mic.data, data)
    assert mic.pixel_size == 2.5 and mic.name == "a"
    stack = _image((4, 16, 24), seed=3)
    io.write_micrograph(tmp_path / "s.mrcs", stack, pixel_size=1.25)
    read, pixel_size = io.read_micrograph_stack(tmp_path / "s.mrcs")
    assert read.shape == (4, 16, 24) and read.dtype == np.float32 and pixel_size == 1.25
    np.testing.assert_array_equal(read, stack)
    with mrcfile.open(tmp_path / "s.mrcs") as mrc:
        assert mrc.is_image_stack() and int(mrc.header.mode) == 2


def test_write_micrograph_converts_to_mode_2(tmp_path):
    io.write_micrograph(tmp_path / "i.mrc", np.arange(12, dtype=np.int16).reshape(3, 4))
    with mrcfile.open(tmp_path / "i.mrc") as mrc:
        assert int(mrc.header.mode) == 2
        np.testing.assert_array_equal(mrc.data, np.arange(12, dtype=np.float32).reshape(3, 4))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_text("this is not an MRC file " * 100), "not a readable MRC"),
        (lambda p: p.write_bytes(b""), "not a readable MRC"),
        (lambda p: p.write_bytes(_mrc_bytes(p)[:-100]), "truncated"),
        (lambda p: _write_mrc(p, _with(_image(), 3, np.nan)), "1 pixels are NaN or infinite"),
        (lambda p: _write_mrc(p, _with(_image(), 5, np.inf)), "NaN or infinite"),
        (lambda p: _write_mrc(p, np.full((8, 8), 3.0, np.float32)), "constant"),
        (lambda p: _write_mrc(p, np.ones((1, 30), np.float32)), "only 30 x 1 pixels"),
        (lambda p: _write_mrc(p, np.ones((4, 4), np.complex64)), "complex"),
    ],
)
def test_bad_micrographs(tmp_path, make, message):
    path = tmp_path / "bad.mrc"
    make(path)
    with pytest.raises(MicrographError, match=message) as info:
        io.read_micrograph(path)
    assert str(path) in str(info.value)


def _mrc_bytes(path):
    _write_mrc(path, _image())
    return path.read_bytes()


def _with(image, flat_index, value):
    image.flat[flat_index] = value
    return image


def _patch_header(path, offset, raw_bytes):
    raw = bytearray(path.read_bytes())
    raw[offset : offset + len(raw_bytes)] = raw_bytes
    path.write_bytes(bytes(raw))


def test_unknown_machine_stamp_is_read_as_little_endian(tmp_path, caplog):
    data = _image()
    path = _write_mrc(tmp_path / "stamp.mrc", data, voxel_size=3.0)
    _patch_header(path, 212, b"\x00\x00\x00\x00")
    mic = io.read_micrograph(path)
    np.testing.assert_array_equal(mic.data, data)
    assert mic.pixel_size == 3.0 and "unrecognised machine stamp" in caplog.text


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        # extended header size
        (92, 2**31 - 1, "truncated: the header announces 2147492671 bytes, the file has 9024"),
        (92, -8, "impossible sizes"),
        (12, 101, "unknown MRC mode 101"),
        (0, 0, "impossible sizes"),
        (8, 50, "truncated"),
    ],
)
def test_corrupt_header_fields(tmp_path, offset, value, message):
    path = _write_mrc(tmp_path / "h.mrc", _image())
    _patch_header(path, offset, np.array([value], "<i4").tobytes())
    with pytest.raises(MicrographError, match=message):
        io.read_micrograph(path)


def test_volume_stack_4d_rejected(tmp_path):
    path = tmp_path / "vol.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(_image((4, 8, 8)))
        mrc.set_volume()
        mrc.header.ispg = 401
        mrc.header.mz = 2
    with pytest.raises(MicrographError, match=r"vol\.mrc.*shape \(2, 2, 8, 8\)"):
        io.read_micrograph(path)


def test_check_image():
    image = _image()
    assert io.check_image(image, "x") is image
    converted = io.check_image(np.arange(20, dtype=np.int16).reshape(4, 5), "x")
    assert converted.dtype == np.float32 and converted[3, 4] == 19
    with pytest.raises(MicrographError, match="name1: expected a 2D image"):
        io.check_image(np.arange(10.0), "name1")
    with pytest.raises(MicrographError, match="expected a 2D image.*\\(2, 3, 4, 5\\)"):
        io.check_image(np.zeros((2, 3, 4, 5)), "n")
    with pytest.raises(MicrographError, match="2 pixels are NaN"):
        io.check_image(_with(_with(_image(), 0, np.nan), 7, -np.inf), "n")


@needs_real
def test_real_micrographs():
    mic = io.read_micrograph(BETAGAL / "micrographs" / "Falcon_2012_06_12-14_33_35_0.mrc")
    assert mic.data.shape == (1024, 1024) and mic.pixel_size == 7.08
    assert io.read_micrograph(RIBOSOME / "micrographs" / "061_10028.mrc").pixel_size is None


# --- atomic writes ------------------------------------------------------------------------------


def test_atomic_write_replaces_and_keeps_old_file_on_error(tmp_path):
    path = tmp_path / "out.txt"
    with io.atomic_write(path) as fh:
        fh.write("first")
    assert path.read_text() == "first"
    with pytest.raises(ZeroDivisionError), io.atomic_write(path) as fh:
        fh.write("partial")
        fh.flush()
        _ = 1 / 0
    assert path.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with io.atomic_write(tmp_path / "b.bin", "wb") as fh:
        fh.write(b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    with pytest.raises(ValueError, match="modes"):
        with io.atomic_write(path, "a"):
            pass


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_atomic_write_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    with io.atomic_write(tmp_path / "new.txt") as fh:
        fh.write("x")
    assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o666 & ~umask
    os.chmod(tmp_path / "new.txt", 0o600)
    with io.atomic_write(tmp_path / "new.txt") as fh:
        fh.write("y")
    assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o600


def test_write_micrograph_failure_keeps_old_file(tmp_path):
    path = tmp_path / "m.mrc"
    io.write_micrograph(path, _image())
    before = path.read_bytes()
    with pytest.raises(ValueError):
        io.write_micrograph(path, np.array([["a", "b"], ["c", "d"]]))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.mrc"]
    with pytest.raises(MicrographError, match="shape"):
        io.write_micrograph(path, np.zeros(5))


# --- listing and pairing ------------------------------------------------------------------------


def test_list_micrographs(tmp_path):
    for name in ("b.mrc", "a.mrc.gz", "c.MRC", "notes.txt", "s.mrcs"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.mrc").write_bytes(b"x")
    names = [p.name for p in io.list_micrographs(tmp_path)]
    assert names == ["a.mrc.gz", "b.mrc", "c.MRC"]
    globbed = io.list_micrographs(str(tmp_path / "*.mrc*"))
    assert [p.name for p in globbed] == ["a.mrc.gz", "b.mrc", "s.mrcs"]
    both = io.list_micrographs([tmp_path / "sub" / "d.mrc", tmp_path, tmp_path / "b.mrc"])
    assert [p.name for p in both] == ["d.mrc", "a.mrc.gz", "b.mrc", "c.MRC"]
    with pytest.raises(MicrographError, match="missing.mrc: no such file"):
        io.list_micrographs(tmp_path / "missing.mrc")
    with pytest.raises(MicrographError, match="no micrograph"):
        io.list_micrographs(str(tmp_path / "*.tif"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MicrographError, match="no micrograph"):
        io.list_micrographs(tmp_path / "empty")


def test_pair_files():
    mics = [Path(f"/m/{s}.mrc") for s in ("mic1", "mic1_2", "mic3", "lonely")]
    names = ("mic1_2_autopick.star", "mic1.star", "mic1_manualpick.star", "mic3_picks.box",
             "other.star")
    coords = [Path("/c") / n for n in names]
    pairs = io.pair_files(mics, coords)
    assert pairs == {
        mics[0]: Path("/c/mic1.star"),
        mics[1]: Path("/c/mic1_2_autopick.star"),
        mics[2]: Path("/c/mic3_picks.box"),
    }
    gz = io.pair_files([Path("a.mrc.gz")], [Path("a_autopick.star")])
    assert gz == {Path("a.mrc.gz"): Path("a_autopick.star")}
    with pytest.raises(CoordinatesError, match="several coordinates files match micrograph"):
        io.pair_files([Path("a.mrc")], [Path("a_autopick.star"), Path("a_manualpick.star")])


@needs_real
def test_pair_real_files():
    mics = io.list_micrographs(BETAGAL / "micrographs")
    pairs = io.pair_files(mics, sorted((BETAGAL / "coords").glob("*.star")))
    assert len(mics) == 20 and len(pairs) == 20
    assert all(m.stem == c.stem for m, c in pairs.items())


def test_import_does_not_load_gui_or_torch():
    code = (
        "import sys, napari_deeppicker.core.io\n"
        "bad = [m for m in ('torch', 'napari', 'qtpy', 'magicgui') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
