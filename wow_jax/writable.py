"""Output folders checked before any work: `ensure_writable_dir` creates the folder and writes and
removes a probe file in it, so a read-only, full or non-folder output fails at start-up with one
line naming the config key, not after training steps or denoising.

Local paths and URLs (gs://bucket/run) alike, through etils.epath.
"""

import os
import socket

from etils import epath


def ensure_writable_dir(path: "str | epath.PathLike", key: str) -> epath.Path:
    """Creates `path` (and its parents) and checks a file can be written in it; returns it.

    key: the flag or config key that set the path (e.g. '--workdir', 'config.sample.output_dir'),
    named in the error."""
    folder = epath.Path(path)
    probe = folder / f".wow_jax_write_probe.{socket.gethostname()}.{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        reason = f"{type(error).__name__}: {error.strerror or error}"
        raise ValueError(
            f"{key}={os.fspath(path)!r} must be a folder this process can write to, but writing "
            f"{probe.name} there failed ({reason}); give another folder or fix its permissions"
        ) from error
    return folder
