"""TFRecord <-> ArrayRecord conversion without TensorFlow."""

import numpy as np
import pytest

from tests.data.conftest import synthetic_episode, write_dataset
from wow_jax.data import rlds, tfrecord


def test_crc32c_known_vector():
    assert tfrecord.crc32c(b"123456789") == 0xE3069283  # The CRC-32C check value.


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
        list(tfrecord.read_tfrecord(shard, verify=True))
    shard.write_bytes(bytes(data[:-10]))
    with pytest.raises(ValueError, match="record 2: truncated"):
        list(tfrecord.read_tfrecord(shard))
