"""Build .keras files that are small on disk and enormous when decoded, for the grader's tests."""

import io
import json
import struct
import zipfile
import zlib

import h5py
import keras
from keras import layers


def two_layer_model(path):
    """Save a plain model (a 1x1 convolution and a softmax) that grades as an honest, poor submission."""
    inputs = keras.Input((64, 84, 1))
    keras.Model(inputs, layers.Activation("softmax")(layers.Conv2D(11, 1)(inputs))).save(path)
    return path


def _entries(source):
    with zipfile.ZipFile(source) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def _write(target, entries):
    with zipfile.ZipFile(target, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return target


def weights_bomb(source, target, n_bytes, dataset="layers/conv2d/vars/0"):
    """Copy a .keras file with one weights array declared ``n_bytes`` large and never written.

    HDF5 stores an unwritten array as nothing (its space is allocated when first written):
    the file stays kilobytes, and reading the array allocates all of it (filled with zeros).
    Contiguous, as Keras writes arrays, so that only the check of its shape can refuse it.
    """
    entries = _entries(source)
    buffer = io.BytesIO(entries["model.weights.h5"])
    with h5py.File(buffer, "r+") as f:
        del f[dataset]
        f.create_dataset(dataset, shape=(1, 1, 1024, n_bytes // 4096), dtype="f4", fillvalue=0.0)
    entries["model.weights.h5"] = buffer.getvalue()
    return _write(target, entries)


def config_bomb(source, target, filters):
    """Copy a .keras file with its Conv2D given ``filters`` filters (Keras allocates them on load)."""
    entries = _entries(source)
    configuration = json.loads(entries["config.json"])
    for layer in configuration["config"]["layers"]:
        if layer["class_name"] == "Conv2D":
            layer["config"]["filters"] = filters
    entries["config.json"] = json.dumps(configuration)
    return _write(target, entries)


def zip_bomb(source, target, mib):
    """Copy a .keras file with its weights entry replaced by ``mib`` MiB (under 4096) of deflated zeros.

    One mebibyte of zeros deflates to about 1 KiB with a full flush after it, which makes the
    compressed blocks independent: repeating them builds the stream without compressing
    gigabytes. zipfile writes only what it compresses itself, so the archive is written here
    by its format (local headers, central directory, end record); the bomb's CRC is left 0,
    which a reader finds out only after decoding it all.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    stream = block * mib + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    entries = _entries(source)
    # name -> (method, CRC, stored bytes, declared size)
    records = {name: (zipfile.ZIP_STORED, zlib.crc32(data), data, len(data))
               for name, data in entries.items() if name != "model.weights.h5"}
    records["model.weights.h5"] = (zipfile.ZIP_DEFLATED, 0, stream, mib << 20)
    out, directory = io.BytesIO(), io.BytesIO()
    for name, (method, crc, data, size) in records.items():
        offset, encoded = out.tell(), name.encode()
        out.write(struct.pack("<4s2B4HL2L2H", b"PK\x03\x04", 20, 0, 0, method, 0, 0x21,
                              crc, len(data), size, len(encoded), 0) + encoded + data)
        directory.write(struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, method,
                                    0, 0x21, crc, len(data), size, len(encoded), 0, 0, 0, 0,
                                    0, offset) + encoded)
    start = out.tell()
    out.write(directory.getvalue())
    out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(records), len(records),
                          len(directory.getvalue()), start, 0))
    target.write_bytes(out.getvalue())
    return target


def many_entries(source, target, count):
    """Copy a .keras file with ``count`` empty asset files added."""
    entries = _entries(source)
    entries.update({f"assets/{i}": b"" for i in range(count)})
    return _write(target, entries)


def wide_model(path, factor=64):
    """Save a model of 22 parameters whose activations are ``factor``**2 times an image's size.

    Nothing in the file is large: only running it is. The size checks cannot see that, so
    it shows what the memory limit is for.
    """
    inputs = keras.Input((64, 84, 1))
    x = layers.MaxPooling2D(factor)(layers.UpSampling2D(factor)(inputs))
    keras.Model(inputs, layers.Conv2D(11, 1, activation="softmax")(x)).save(path)
    return path


def wide_conv(path, filters=8192):
    """Save the issue's file: one 1x1 Conv2D with ``filters`` filters (0.1 M parameters).

    It passes every size check, and predicting a batch of 32 images needs 32 x 64 x 84 x
    8,192 floats, 5.6 GB, for its activations: only a memory limit stops it.
    """
    inputs = keras.Input((64, 84, 1))
    x = layers.Conv2D(filters, 1)(inputs)
    keras.Model(inputs, layers.Conv2D(11, 1, activation="softmax")(x)).save(path)
    return path
