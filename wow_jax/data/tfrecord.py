"""TFDS datasets between TFRecord and ArrayRecord files, in pure Python (no TensorFlow).

A prepared TFDS dataset stores serialized tf.train.Example records; only the container differs
between file formats, so converting copies every record unchanged (same order, same sharding) and
sets `fileFormat` in dataset_info.json. This turns Open X-Embodiment / RLDS datasets downloaded as
TFRecord into ArrayRecord for `tfds.data_source` random access.

TFRecord framing per record: uint64 length, uint32 masked CRC32C(length), data, uint32 masked
CRC32C(data). Both CRCs are checked by default (google-crc32c: GB/s, far faster than the disk);
verify=False skips the data CRC.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import google_crc32c
from tqdm import tqdm

FORMATS = {"tfrecord": "tfrecord", "array_record": "array_record"}
_MASK_DELTA = 0xA282EAD8


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of `data` through google-crc32c (hardware CRC instructions)."""
    return google_crc32c.value(data)


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def read_tfrecord(path: str | Path, verify: bool = True) -> Iterator[bytes]:
    """Yields the records of one TFRecord file; a damaged file raises naming file and record."""
    with open(path, "rb") as f:
        index = 0
        while header := f.read(12):
            if len(header) < 12:
                raise ValueError(f"{path} record {index}: truncated header; the file is damaged")
            (length,), (length_crc,) = (
                struct.unpack("<Q", header[:8]),
                struct.unpack("<I", header[8:]),
            )
            if masked_crc(header[:8]) != length_crc:
                raise ValueError(f"{path} record {index}: length checksum mismatch (corrupt file)")
            data, footer = f.read(length), f.read(4)
            if len(data) < length or len(footer) < 4:
                raise ValueError(f"{path} record {index}: truncated record; the file is damaged")
            if verify and masked_crc(data) != struct.unpack("<I", footer)[0]:
                raise ValueError(f"{path} record {index}: data checksum mismatch (corrupt file)")
            yield data
            index += 1


def write_tfrecord(path: str | Path, records) -> int:
    count = 0
    with open(path, "wb") as f:
        for data in records:
            length = struct.pack("<Q", len(data))
            f.write(length + struct.pack("<I", masked_crc(length)))
            f.write(data + struct.pack("<I", masked_crc(data)))
            count += 1
    return count


def _read_array_record(path: Path) -> Iterator[bytes]:
    from array_record.python import array_record_module

    reader = array_record_module.ArrayRecordReader(str(path))
    try:
        for i in range(reader.num_records()):
            reader.seek(i)
            yield reader.read()
    finally:
        reader.close()


def _write_array_record(path: Path, records) -> int:
    from array_record.python import array_record_module

    writer = array_record_module.ArrayRecordWriter(str(path), "group_size:1")
    count = 0
    for data in records:
        writer.write(data)
        count += 1
    writer.close()
    return count


def convert_dataset(src: str | Path, dst: str | Path, to: str = "array_record", verify=True):
    """Copies the TFDS dataset version dir `src` to `dst` with its shards in format `to`."""
    src, dst = Path(src), Path(dst)
    info = json.loads((src / "dataset_info.json").read_text())
    source_format = info.get("fileFormat", "tfrecord")
    if to not in FORMATS or source_format not in FORMATS:
        raise ValueError(f"formats must be in {sorted(FORMATS)}, got {source_format} -> {to}")
    if dst.exists() and any(dst.iterdir()):
        raise ValueError(f"{dst} is not empty; choose an empty output folder")
    dst.mkdir(parents=True, exist_ok=True)
    shard = re.compile(rf"^(.*)\.{source_format}(-\d{{5}}-of-\d{{5}})$")
    for path in sorted(src.iterdir()):
        if path.name == "dataset_info.json":
            continue
        match = shard.match(path.name)
        if not match:
            shutil.copy2(path, dst / path.name)
            continue
        out = dst / f"{match.group(1)}.{to}{match.group(2)}"
        records = (
            read_tfrecord(path, verify) if source_format == "tfrecord" else _read_array_record(path)
        )
        records = tqdm(records, desc=path.name, unit="ep", leave=False)
        (write_tfrecord if to == "tfrecord" else _write_array_record)(out, records)
    info["fileFormat"] = to
    (dst / "dataset_info.json").write_text(json.dumps(info, indent=2))
    return dst
