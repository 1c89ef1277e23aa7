"""Mixture captions: conjugation, every variant enumerated, configured frequencies, determinism."""

import collections
import itertools

import grain
import numpy as np
import pytest

from wow_jax.data import captions


@pytest.mark.parametrize(
    ("phrase", "expected"),
    [
        ("reach the goal position", "reaches the goal position"),
        ("push the puck", "pushes the puck"),
        ("open the drawer", "opens the drawer"),
        ("carry the box", "carries the box"),
        ("press the button.", "presses the button"),
        ("Pick up the cup", "picks up the cup"),
    ],
)
def test_third_person(phrase, expected):
    assert captions.third_person(phrase) == expected


def test_render_examples():
    seg = ["reach the block", "push it left"]
    robot = "the Franka Panda arm"
    assert (
        captions.render("push the block", seg, robot, ("model", "short", "coarse"))
        == "The Franka Panda arm pushes the block."
    )
    assert (
        captions.render("push the block", seg, robot, ("effector", "short", "fine"))
        == "The end-effector reaches the block, then pushes it left."
    )
    long_fine = captions.render("push the block", seg, robot, ("generic", "long", "fine"))
    assert "First, the robot reaches the block. Finally it pushes it left." in long_fine
    templated = captions.render("push the block", [], robot, ("generic", "short", "fine"))
    assert templated == (
        "The robot moves into position near the target, then pushes the block, then comes to rest."
    )


def test_descriptive_captions_keep_wording_and_rename_the_robot():
    text = "The robot arm opens the drawer slowly"
    assert not captions.is_imperative(text) and captions.is_imperative("open the drawer")
    model = captions.render(text, [], "the Franka Panda arm", ("model", "short", "coarse"))
    assert model == "The Franka Panda arm opens the drawer slowly."
    fine = captions.render(
        "open it",
        ["grasp the handle", "The robot pulls it"],
        "the Sawyer arm",
        ("effector", "short", "fine"),
    )
    assert fine == "The end-effector grasps the handle, then the end-effector pulls it."


def test_variants_cover_every_choice():
    segments = ["reach the cup", "reach the cup", "lift it"]
    variants = captions.caption_variants("push the block", segments, "the Sawyer arm")
    rendered = {
        captions.render("push the block", ["reach the cup", "lift it"], "the Sawyer arm", c)
        for c in itertools.product(captions.ROBOT_KINDS, captions.LENGTHS, captions.GRANULARITIES)
    }
    assert set(variants) == rendered and len(variants) == 12


def test_frequencies_match_configured_probabilities():
    mixture = captions.CaptionMixture(long_prob=0.3, fine_prob=0.6, robot_probs=(0.5, 0.2, 0.3))
    element = {
        "instruction": "open the drawer",
        "segments": ["grasp the handle", "pull"],
        "robot": "the Sawyer arm",
    }
    transform = captions.MixtureCaptionTransform(mixture)
    rng = np.random.default_rng(3)
    out = [transform(element, rng) for _ in range(10_000)]
    kinds = collections.Counter(e["caption_kind"] for e in out)
    n = len(out)
    freq = lambda axis, value: sum(c for k, c in kinds.items() if k.split("/")[axis] == value) / n  # noqa: E731
    for robot, p in zip(captions.ROBOT_KINDS, mixture.robot_probs, strict=True):
        assert abs(freq(0, robot) - p) < 0.02, robot
    assert abs(freq(1, "long") - 0.3) < 0.02
    assert abs(freq(2, "fine") - 0.6) < 0.02
    variants = set(
        captions.caption_variants("open the drawer", element["segments"], "the Sawyer arm")
    )
    assert {e["caption"] for e in out} == variants  # Every variant occurs; nothing else does.


def test_grain_transform_is_deterministic_given_the_seed():
    mixture = captions.CaptionMixture()
    element = {"instruction": "open the drawer", "segments": ["a", "b"], "robot": "the Sawyer arm"}

    def run(seed):
        ds = grain.MapDataset.source([element] * 100)
        return [
            e["caption"]
            for e in ds.random_map(captions.MixtureCaptionTransform(mixture), seed=seed)
        ]

    again = run(3)
    assert again == run(3)
    other = run(4)
    assert other != again


def test_bad_probabilities_are_rejected():
    with pytest.raises(ValueError, match="caption_robot_probs"):
        captions.CaptionMixture(robot_probs=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="caption_long_prob"):
        captions.CaptionMixture(long_prob=1.5)


def test_default_robot_used_when_episode_has_none():
    mixture = captions.CaptionMixture(
        robot_probs=(1.0, 0.0, 0.0), long_prob=0.0, fine_prob=0.0, default_robot="the Sawyer arm"
    )
    element = {"instruction": "reach the goal", "segments": [""], "robot": ""}
    out = captions.MixtureCaptionTransform(mixture)(element, np.random.default_rng(0))
    assert out["caption"] == "The Sawyer arm reaches the goal."


def test_dataset_variants_contain_every_pipeline_caption(data_cfg):
    from wow_jax.data import pipeline, rlds

    source = rlds.EpisodeSource(data_cfg.path)
    variants = set(captions.dataset_caption_variants(source, data_cfg, progress=False))
    it = pipeline.create_iterator(data_cfg, process_index=0, process_count=1)
    seen = {str(c) for _ in range(30) for c in next(it)["caption"]}
    assert seen <= variants
    assert len(seen) > 10  # The mixture really mixes.
    # Windows inside one segment, and windows across the boundary, both give fine captions.
    assert "The robot reaches the block." in variants
    assert "The robot reaches the block, then pushes it left." in variants
