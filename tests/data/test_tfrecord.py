"""TFRecord <-> ArrayRecord conversion without TensorFlow."""

from pathlib import Path

import grain
import numpy as np
import pytest

from tests.data.conftest import synthetic_episode, write_dataset
from wow_jax.data import rlds, tfrecord


def test_crc32c_known_vectors():
    assert tfrecord.crc32c(b"123456789") == 0xE3069283  # The CRC-32C check value.
    assert tfrecord.crc32c(b"") == 0 and tfrecord.crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720


def test_reads_and_writes_a_tensorflow_written_file_byte_for_byte(tmp_path):
    """Grain ships a TFRecord file written by TensorFlow: both CRCs check, rewriting is exact."""
    path = Path(grain.__file__).parent / "_src/python/testdata/morris_sequence_first_5.tfrecord"
    records = list(tfrecord.read_tfrecord(path))
    assert records == [b"1", b"1 1", b"2 1", b"1 2 1 1", b"1 1 1 2 2 1"]
    assert tfrecord.write_tfrecord(tmp_path / "copy.tfrecord", records) == 5
    assert (tmp_path / "copy.tfrecord").read_bytes() == path.read_bytes()


def test_round_trip_through_tfrecord(tmp_path):
    src = write_dataset(tmp_path / "a", [synthetic_episode(e, 10 + e) for e in range(3)])
    tf_dir = tfrecord.convert_dataset(src, tmp_path / "tf" / "toy" / "1.0.0", to="tfrecord")
    (shard,) = tf_dir.glob("toy-train.tfrecord-*")
    assert len(list(tfrecord.read_tfrecord(shard, verify=True))) == 3
    back = tfrecord.convert_dataset(tf_dir, tmp_path / "ar" / "toy" / "1.0.0")
    a, b = rlds.EpisodeSource(src), rlds.EpisodeSource(back)
    assert len(b) == 3 and (back / "action_stats.json").exists()
    for i in range(3):
        x, y = a.read(i, [0, 5, 9], [0, 8]), b.read(i, [0, 5, 9], [0, 8])
        np.testing.assert_array_equal(x["frames"], y["frames"])
        np.testing.assert_array_equal(x["actions"], y["actions"])
        assert x["episode_id"] == y["episode_id"]

    data = bytearray(shard.read_bytes())
    data[30] ^= 0xFF  # Flip a byte inside record 0's payload.
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"{shard.name} record 0: data checksum"):
        list(tfrecord.read_tfrecord(shard))  # Data CRCs are checked by default.
    assert len(list(tfrecord.read_tfrecord(shard, verify=False))) == 3
    shard.write_bytes(bytes(data[:-10]))
    with pytest.raises(ValueError, match="record 2: truncated"):
        list(tfrecord.read_tfrecord(shard, verify=False))
