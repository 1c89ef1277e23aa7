"""config.data validation (wow_jax/configuration.py: _check_data)."""

import pytest

from wow_jax import configuration


def test_shipped_configs_validate():
    from configs import demo, tiny, wan1_3b, wow14b

    for module in (tiny, demo, wan1_3b, wow14b):  # The demo trains on one device.
        configuration.validate(module.get_config(), 1 if module is demo else 8)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("crop", "stretch", "data.crop"),
        ("action_norm", "minmax", "data.action_norm"),
        ("caption_robot_probs", (0.5, 0.5, 0.5), "caption_robot_probs"),
        ("caption_long_prob", 1.5, "caption_long_prob"),
        ("frame_stride", 0, "frame_stride"),
    ],
)
def test_bad_data_keys_are_refused(tiny_config, key, value, match):
    tiny_config.data[key] = value
    with pytest.raises(ValueError, match=match):
        configuration.validate(tiny_config, 8)
