"""A base checkpoint with a fine-tuned weights file loaded over it, as WoW releases ship the DiT.

A WoW-1-Wan-14B folder holds the stock Wan2.1-I2V-14B files (the DiT as bf16 safetensors shards
with their index, Wan2.1_VAE.pth, the umT5 and CLIP .pth files) plus `WoW_video_dit.pt`, WoW's
trained DiT weights, which the official code loads over the base DiT with
`load_state_dict(strict=False)`. `OverlaySource` is that merge as a `TensorSource`: every overlay
tensor replaces the base tensor of the same name, after removing the training wrappers' name
prefixes (`PREFIXES`: DiffSynth's `pipe.dit.`, DDP/DeepSpeed's `module.`, ...); overlay tensors
matching no base name are listed and left out; an overlay matching nothing, or a matched tensor
of another shape, is refused. Nothing is read up front: each tensor is read from the file that
wins when asked for, so the import stays streaming.
"""

import dataclasses

from wow_jax.interop import formats

# Name prefixes of the trainers' state dicts (removed repeatedly, any order).
PREFIXES = ("pipe.dit.", "module.", "model.", "dit.")
MAX_LISTED = 20  # Names listed in a report or an error.


def canonical_name(name: str) -> str:
    """`name` without the trainers' prefixes: 'module.pipe.dit.blocks.0.q.weight' ->
    'blocks.0.q.weight'."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in PREFIXES:
            if name.startswith(prefix):
                name, stripped = name.removeprefix(prefix), True
    return name


@dataclasses.dataclass(frozen=True)
class OverlayReport:
    overlay: str  # The overlay file(s).
    from_overlay: int  # Base tensors replaced by an overlay tensor.
    from_base: int  # Base tensors kept.
    unmatched: tuple[str, ...]  # Overlay tensor names (as stored) matching no base tensor.

    def counts(self) -> dict:
        """The report for a JSON summary: the unmatched names as their count."""
        return {
            "file": self.overlay,
            "from_overlay": self.from_overlay,
            "from_base": self.from_base,
            "unmatched": len(self.unmatched),
        }

    def summary(self) -> str:
        text = (
            f"overlay {self.overlay}: {self.from_overlay} tensors from the overlay, "
            f"{self.from_base} from the base"
        )
        if self.unmatched:
            shown = ", ".join(self.unmatched[:MAX_LISTED])
            more = len(self.unmatched) - MAX_LISTED
            text += (
                f"; {len(self.unmatched)} overlay tensors match no base tensor and are not used: "
                + shown
                + (f" ... (+{more} more)" if more > 0 else "")
            )
        return text


class OverlaySource(formats.TensorSource):
    """`base` with each tensor of `overlay` (names made canonical) in place of its namesake."""

    def __init__(self, base: formats.TensorSource, overlay: formats.TensorSource):
        self.base, self.overlay = base, overlay
        by_name = _canonical_names(overlay)
        self._from_overlay = {c: n for c, n in by_name.items() if c in base.infos}
        unmatched = tuple(sorted(n for c, n in by_name.items() if c not in base.infos))
        if not self._from_overlay:
            raise formats.CheckpointFormatError(
                f"overlay {_files(overlay)}: none of its {len(by_name)} tensors (e.g. "
                f"{sorted(by_name)[:5]}, prefixes {PREFIXES} removed) names a tensor of the base "
                f"{_files(base)} (e.g. {sorted(base.names())[:5]}); is it the weights of this "
                "component and model, in the base's naming (Wan-native)? Set "
                "config.convert.overlay='' to import the base alone"
            )
        _check_shapes(self._from_overlay, base, overlay)
        infos = dict(base.infos)
        infos.update({c: overlay.infos[n] for c, n in self._from_overlay.items()})
        super().__init__(infos, [*base.files, *overlay.files])
        self.report = OverlayReport(
            _files(overlay),
            len(self._from_overlay),
            len(base.infos) - len(self._from_overlay),
            unmatched,
        )

    def read(self, name: str):
        if name in self._from_overlay:
            return self.overlay.read(self._from_overlay[name])
        return self.base.read(name)

    def close(self) -> None:
        self.base.close()
        self.overlay.close()


def _canonical_names(overlay: formats.TensorSource) -> dict[str, str]:
    """{canonical name: stored name}; two stored names for one canonical name are refused."""
    out, clashes = {}, []
    for name in overlay.names():
        canonical = canonical_name(name)
        if canonical in out:
            clashes.append(f"{out[canonical]} and {name}")
        out[canonical] = name
    if clashes:
        raise formats.CheckpointFormatError(
            f"overlay {_files(overlay)}: tensors that name the same weight once the prefixes "
            f"{PREFIXES} are removed: {clashes[:MAX_LISTED]}; keep one of each pair"
        )
    return out


def _check_shapes(matched: dict[str, str], base, overlay) -> None:
    bad = [
        f"{stored}: overlay {overlay.infos[stored].shape}, base {base.infos[name].shape}"
        for name, stored in sorted(matched.items())
        if overlay.infos[stored].shape != base.infos[name].shape
    ]
    if bad:
        raise formats.CheckpointFormatError(
            f"overlay {_files(overlay)}: {len(bad)} tensors disagree in shape with the base "
            f"{_files(base)}: {'; '.join(bad[:MAX_LISTED])}. The overlay belongs to another "
            "model size or variant than the base; use the base it was trained from"
        )


def _files(source: formats.TensorSource) -> str:
    names = [str(f) for f in source.files]
    return names[0] if len(names) == 1 else f"{names[0]} (+{len(names) - 1} files)"
