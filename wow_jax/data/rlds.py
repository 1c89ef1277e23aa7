"""The one on-disk episode format: an RLDS dataset stored by TFDS in ArrayRecord files.

Every builder in wow_jax (Meta-World collection, mp4 folders, the TFRecord converter) writes this
layout, and Open X-Embodiment datasets already prepared as ArrayRecord read the same way. One record
is one episode; reading needs tensorflow-datasets + array_record only, never TensorFlow:

    <dir>/<name>/<version>/dataset_info.json, features.json,
                           <name>-train.array_record-0000i-of-0000n, action_stats.json
    episode = {
      'steps': Dataset of N steps, each {
        'observation': {'image': PNG or JPEG uint8 [H, W, 3]},
        'action': float32 [A]              # action taken after this observation (last: zeros)
        'reward': float32, 'discount': float32,
        'is_first', 'is_last', 'is_terminal': bool,
        'success': bool                    # task solved at this step (simulators)
        'language_instruction': str        # episode-level (coarse) instruction
        'segment_description': str         # fine description of the segment ('' when none)
      },
      'episode_metadata': {'episode_id': str, 'robot': str, 'fps': float32, 'source': str},
    }

`write_episodes` stores python episodes; `EpisodeSource` gives random access to stored ones with
images left PNG-encoded until a clip asks for them. A record that cannot be parsed or decoded raises
`BadEpisodeError` naming the ArrayRecord file and the record index inside it.
"""

from __future__ import annotations

import bisect
import dataclasses
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_KEY = "observation.image"  # Dotted path of the camera written by wow_jax builders.


class BadEpisodeError(ValueError):
    """An episode that cannot be used (corrupt record, bad image bytes, too short, no caption)."""


@dataclasses.dataclass
class Episode:
    """One episode in memory, the input of `write_episodes`.

    frames: uint8 [N, H, W, 3] camera frames; actions: float32 [N, A] (row t is the action taken
    after frame t; the last row is ignored and stored as zeros); instruction: the task text;
    rewards / success: [N] per step (optional); segments: fine descriptions as
    (first_step, last_step_exclusive, text) (optional).
    """

    frames: np.ndarray
    actions: np.ndarray
    instruction: str
    episode_id: str
    robot: str = ""
    fps: float = 0.0
    source: str = ""
    rewards: np.ndarray | None = None
    success: np.ndarray | None = None
    segments: tuple[tuple[int, int, str], ...] = ()


IMAGE_FORMATS = ("png", "jpeg")


def png_bytes(frame: np.ndarray) -> bytes:
    """uint8 [H, W, 3] -> PNG bytes (tfds stores these without calling TensorFlow)."""
    return encode_image(frame, "png")


def encode_image(frame: np.ndarray, image_format: str = "png") -> bytes:
    """uint8 [H, W, 3] -> PNG (lossless) or JPEG (quality 95, ~3x faster to decode) bytes."""
    buffer = io.BytesIO()
    if image_format == "png":
        Image.fromarray(frame).save(buffer, format="PNG", compress_level=1)
    elif image_format == "jpeg":
        Image.fromarray(frame).save(buffer, format="JPEG", quality=95)
    else:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    return buffer.getvalue()


def decode_image(data: bytes, min_size: tuple[int, int] | None = None) -> np.ndarray:
    """PNG/JPEG bytes -> uint8 [H, W, 3].

    min_size (height, width): JPEGs are decoded at the smallest 1/2, 1/4, 1/8 scale still at
    least that large (much faster for big frames; a resize follows anyway).
    """
    with Image.open(io.BytesIO(data)) as image:
        if min_size is not None and image.format == "JPEG":
            image.draft("RGB", (min_size[1], min_size[0]))
        return np.asarray(image.convert("RGB"))


def features(
    action_dim: int,
    image_shape: tuple[int | None, int | None] = (None, None),
    image_format: str = "png",
):
    """The tfds FeaturesDict of the format above (image height/width may be None = varying)."""
    import tensorflow_datasets as tfds

    text = tfds.features.Text()
    step = {
        "observation": tfds.features.FeaturesDict(
            {"image": tfds.features.Image(shape=(*image_shape, 3), encoding_format=image_format)}
        ),
        "action": tfds.features.Tensor(shape=(action_dim,), dtype=np.float32),
        "reward": tfds.features.Scalar(dtype=np.float32),
        "discount": tfds.features.Scalar(dtype=np.float32),
        "is_first": tfds.features.Scalar(dtype=np.bool_),
        "is_last": tfds.features.Scalar(dtype=np.bool_),
        "is_terminal": tfds.features.Scalar(dtype=np.bool_),
        "success": tfds.features.Scalar(dtype=np.bool_),
        "language_instruction": text,
        "segment_description": text,
    }
    if not action_dim:  # Videos without actions: the step has no 'action' feature at all.
        del step["action"]
    metadata = {"episode_id": text, "robot": text, "fps": np.float32, "source": text}
    return tfds.features.FeaturesDict(
        {"steps": tfds.features.Dataset(step), "episode_metadata": metadata}
    )


def _check_episode(ep: Episode) -> None:
    n = len(ep.frames)
    if ep.frames.ndim != 4 or ep.frames.shape[-1] != 3 or ep.frames.dtype != np.uint8:
        raise ValueError(
            f"episode {ep.episode_id}: frames must be uint8 [N, H, W, 3], got "
            f"{ep.frames.dtype} {ep.frames.shape}; convert with np.asarray(frames, np.uint8)"
        )
    if ep.actions.ndim != 2 or len(ep.actions) != n:
        raise ValueError(
            f"episode {ep.episode_id}: actions must be [N={n}, A], got {ep.actions.shape}; pad "
            "the last step with zeros (RLDS: the last action is ignored)"
        )


def _to_example(ep: Episode, image_format: str = "png") -> dict:
    _check_episode(ep)
    n = len(ep.frames)
    fine = [""] * n
    for start, end, text in ep.segments:
        for t in range(max(start, 0), min(end, n)):
            fine[t] = text
    rewards = np.zeros(n, np.float32) if ep.rewards is None else ep.rewards
    success = np.zeros(n, bool) if ep.success is None else ep.success
    actions = np.asarray(ep.actions, np.float32).copy()
    actions[-1] = 0.0
    steps = [
        {
            "observation": {"image": encode_image(ep.frames[t], image_format)},
            **({"action": actions[t]} if actions.shape[-1] else {}),
            "reward": np.float32(rewards[t]),
            "discount": np.float32(1.0),
            "is_first": t == 0,
            "is_last": t == n - 1,
            "is_terminal": bool(t == n - 1 and success[t]),
            "success": bool(success[t]),
            "language_instruction": ep.instruction,
            "segment_description": fine[t],
        }
        for t in range(n)
    ]
    metadata = {
        "episode_id": ep.episode_id,
        "robot": ep.robot,
        "fps": np.float32(ep.fps),
        "source": ep.source,
    }
    return {"steps": steps, "episode_metadata": metadata}


def write_episodes(
    episodes: Iterable[Episode],
    data_dir: str | Path,
    name: str,
    *,
    action_dim: int,
    image_shape: tuple[int | None, int | None] = (None, None),
    description: str = "",
    version: str = "1.0.0",
    image_format: str = "png",
) -> Path:
    """Stores episodes as `<data_dir>/<name>/<version>` (ArrayRecord, split 'train').

    Episodes are consumed lazily (pass a generator with a progress bar). Returns the version dir.
    image_format: 'png' (lossless; simulators) or 'jpeg' (camera/video data: decodes faster).
    """
    import tensorflow_datasets as tfds

    def examples() -> Iterator[tuple[str, dict]]:
        for index, ep in enumerate(episodes):
            yield f"{index:08d}", _to_example(ep, image_format)

    class _Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version(version)

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                description=description or f"wow_jax RLDS episodes ({name})",
                features=features(action_dim, image_shape, image_format),
                disable_shuffling=True,
            )

        def _split_generators(self, dl_manager):
            del dl_manager
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            yield from examples()

    _Builder.name = name
    # A one-part module name makes tfds skip its package-resource lookup of the builder's source
    # (which needs the optional importlib_resources package); the builder has no code to locate.
    _Builder.__module__ = "wow_jax_episode_builder"
    builder = _Builder(data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare()
    return Path(builder.data_dir)


def resolve_dataset_dir(path: str | Path) -> Path:
    """A dir holding dataset_info.json, or its parent(s) with exactly one such dataset below."""
    path = Path(path)
    if (path / "dataset_info.json").exists():
        return path
    found = sorted(p.parent for p in path.glob("*/dataset_info.json")) or sorted(
        p.parent for p in path.glob("*/*/dataset_info.json")
    )
    if len(found) != 1:
        raise ValueError(
            f"expected one TFDS dataset (a folder with dataset_info.json) at or below {path}, "
            f"found {len(found)}: {[str(f) for f in found][:5]}; set config.data.path to the "
            "dataset version folder, e.g. <dir>/<name>/1.0.0"
        )
    return found[0]


def _get(tree, dotted: str):
    for key in dotted.split("."):
        tree = tree[key]
    return tree


def _skip_decoders(image_key: str) -> dict:
    import tensorflow_datasets as tfds

    decoders: dict = {}
    node = decoders.setdefault("steps", {})
    keys = image_key.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = tfds.decode.SkipDecoding()
    return decoders


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class EpisodeSource:
    """Random access to the episodes of an RLDS ArrayRecord dataset (no TensorFlow).

    `len(source)` episodes; `source.read(i, frame_steps, action_steps)` decodes only the frames
    at `frame_steps` and returns {'frames': uint8 [len(frame_steps), H, W, 3], 'actions': float32
    [len(action_steps), A], 'instruction', 'segments' (per frame step), 'episode_id', 'robot'};
    `source.successes(i)` the per-step success flags bool [N]. Picklable (Grain worker processes
    re-open the files).
    """

    def __init__(
        self,
        path: str | Path,
        split: str = "train",
        image_key: str = IMAGE_KEY,
        action_key: str = "action",
        instruction_key: str = "language_instruction",
    ):
        self.path = resolve_dataset_dir(path)
        self.split, self.image_key = split, image_key
        self.action_key, self.instruction_key = action_key, instruction_key
        self._source = None
        info = json.loads((self.path / "dataset_info.json").read_text())
        splits = {s["name"]: s for s in info.get("splits", [])}
        if split not in splits:
            raise ValueError(f"{self.path} has splits {sorted(splits)}, not {split!r}")
        self._shard_lengths = [int(n) for n in splits[split].get("shardLengths", [])]
        self._offsets = np.cumsum([0, *self._shard_lengths]).tolist()
        self._name = info["name"]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_source"] = None
        return state

    @property
    def source(self):
        if self._source is None:
            import tensorflow_datasets as tfds

            builder = tfds.builder_from_directory(str(self.path))
            self._source = builder.as_data_source(
                split=self.split, decoders=_skip_decoders(self.image_key)
            )
        return self._source

    def __len__(self) -> int:
        return self._offsets[-1] if self._shard_lengths else len(self.source)

    def location(self, index: int) -> str:
        """'<file> record <k>' of global episode `index` (for error messages)."""
        shard = max(bisect.bisect_right(self._offsets, index) - 1, 0)
        num = len(self._shard_lengths)
        file = self.path / f"{self._name}-{self.split}.array_record-{shard:05d}-of-{num:05d}"
        return f"{file} record {index - self._offsets[shard]}"

    def _steps(self, index: int):
        try:
            episode = self.source[index]
            steps = episode["steps"]
            return steps, len(steps), episode.get("episode_metadata", {})
        except Exception as e:  # Any parse failure of a stored record is a corrupt episode.
            raise BadEpisodeError(
                f"corrupt episode at {self.location(index)}: {type(e).__name__}: {e}; "
                "rebuild or drop this file"
            ) from e

    def num_steps(self, index: int) -> int:
        return self._steps(index)[1]

    def episode_info(self, index: int) -> tuple[int, float]:
        """(number of steps, recorded fps or 0) of episode `index`."""
        _, n, metadata = self._steps(index)
        return n, float(metadata.get("fps", 0.0) or 0.0)

    def read(self, index: int, frame_steps, action_steps, min_size=None) -> dict:
        return self.read_clip(index, lambda n, fps: (frame_steps, action_steps), min_size)

    def read_clip(self, index: int, choose, min_size=None) -> dict:
        """Like `read`, with the steps chosen by `choose(num_steps, fps) -> (frame_steps,
        action_steps)` after the record is parsed once; min_size: see `decode_image`."""
        steps, n, metadata = self._steps(index)
        frame_steps, action_steps = choose(n, float(metadata.get("fps", 0.0) or 0.0))
        frame_steps = [int(t) for t in frame_steps]
        wanted = sorted(set(frame_steps) | set(action_steps))
        if wanted and wanted[-1] >= n:
            raise BadEpisodeError(f"episode at {self.location(index)} has {n} steps < needed")
        try:
            decoded = {t: steps[t] for t in wanted}
            frames = [decode_image(_get(decoded[t], self.image_key), min_size) for t in frame_steps]
            actions = [self._action(decoded[t]) for t in action_steps]
            first = decoded[frame_steps[0]]
            instruction = _text(_get(first, self.instruction_key))
            segments = [_text(decoded[t].get("segment_description", b"")) for t in frame_steps]
        except Exception as e:
            raise BadEpisodeError(
                f"corrupt episode at {self.location(index)}: {type(e).__name__}: {e}"
            ) from e
        shapes = {f.shape for f in frames}
        if len(shapes) != 1:
            raise BadEpisodeError(
                f"episode at {self.location(index)} mixes frame sizes {sorted(shapes)}"
            )
        episode_id = _text(metadata.get("episode_id", b"")) or f"{self._name}/{index}"
        return {
            "frames": np.stack(frames),
            "actions": np.stack(actions).astype(np.float32)
            if actions
            else np.zeros((0, 0), np.float32),
            "instruction": instruction.strip(),
            "segments": segments,
            "episode_id": episode_id,
            "robot": _text(metadata.get("robot", b"")),
        }

    def step_texts(self, index: int) -> dict:
        """{'instruction', 'segments' (one per step), 'robot'} without decoding any image."""
        steps, n, metadata = self._steps(index)
        try:
            decoded = [steps[t] for t in range(n)]
            instruction = _text(_get(decoded[0], self.instruction_key)).strip() if n else ""
            segments = [_text(s.get("segment_description", b"")) for s in decoded]
        except Exception as e:
            raise BadEpisodeError(f"corrupt episode at {self.location(index)}: {e}") from e
        return {
            "instruction": instruction,
            "segments": segments,
            "robot": _text(metadata.get("robot", b"")),
        }

    def successes(self, index: int) -> np.ndarray:
        """bool [N]: each step's 'success' flag (simulators; False where none was recorded)."""
        steps, n, _ = self._steps(index)
        try:
            return np.asarray([bool(steps[t].get("success", False)) for t in range(n)], bool)
        except Exception as e:
            raise BadEpisodeError(f"corrupt episode at {self.location(index)}: {e}") from e

    def _action(self, step: dict) -> np.ndarray:
        if self.action_key == "action" and "action" not in step:
            return np.zeros(0, np.float32)  # A dataset without actions (e.g. plain videos).
        return _flat_action(_get(step, self.action_key))

    def all_actions(self, index: int) -> np.ndarray:
        """float32 [N-1, A]: every action of an episode except the ignored last one."""
        steps, n, _ = self._steps(index)
        try:
            acts = [self._action(steps[t]) for t in range(n - 1)]
        except Exception as e:
            raise BadEpisodeError(f"corrupt episode at {self.location(index)}: {e}") from e
        return np.stack(acts).astype(np.float32) if acts else np.zeros((0, 0), np.float32)


def _flat_action(action) -> np.ndarray:
    """An action vector, or an OXE action dict flattened in sorted key order -> float32 [A]."""
    if isinstance(action, dict):
        return np.concatenate([_flat_action(action[k]) for k in sorted(action)])
    return np.asarray(action, np.float32).reshape(-1)
