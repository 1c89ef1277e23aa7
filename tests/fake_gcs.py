"""An offline stand-in for Google Cloud Storage: `gs://bucket/key` lives in a local folder.

Both layers Orbax writes through are redirected, nothing else is patched:
- etils.epath opens gs:// paths with fsspec's 'gcs' filesystem (when TensorFlow is absent):
  registered here as a local filesystem rooted at `root` that answers in gcsfs's 'bucket/key'
  form, so epath and Orbax see a bucket;
- Orbax hands gs:// paths to TensorStore's gcs kvstore (`gcs_utils.get_kvstore_for_gcs`):
  replaced by TensorStore's file kvstore under `root`; and the bucket's hierarchical-namespace
  query (a Cloud API call) answers False.
epath caches its fsspec filesystem: the cache is cleared on entry and exit, so each context
(each root) gets its own.
Code under test keeps passing 'gs://bucket/...' strings; a path turned into a local one
(e.g. `<cwd>/gs:/bucket/...`) misses the bucket and fails.
"""

import contextlib
import os

import fsspec
from etils.epath import backend as epath_backend
from fsspec.implementations.local import LocalFileSystem
from fsspec.registry import _registry as fsspec_classes
from orbax.checkpoint._src.path import gcs_utils


@contextlib.contextmanager
def fake_gcs(root):
    """Within the context, gs://<bucket>/<key> is the file `<root>/<bucket>/<key>`."""
    root = str(root)

    class FakeGCS(LocalFileSystem):
        protocol = ("gcs", "gs")
        root_marker = ""

        @classmethod
        def _strip_protocol(cls, path):
            path = str(path)
            for scheme in ("gs://", "gcs://"):
                if path.startswith(scheme):
                    return os.path.join(root, path[len(scheme) :]).rstrip("/")
            return LocalFileSystem._strip_protocol(path)

        def glob(self, path, **kwargs):  # gcsfs answers 'bucket/key', without the protocol
            return [p[len(root) + 1 :] for p in super().glob(path, **kwargs)]

    def file_kvstore(path: str) -> dict:
        return {"driver": "file", "path": os.path.join(root, path.removeprefix("gs://"))}

    previous = fsspec_classes.get("gcs")  # Restored on exit.
    fsspec.register_implementation("gcs", FakeGCS, clobber=True)
    cached = type(epath_backend.fsspec_backend)._get_filesystem  # epath keeps the instance.
    cached.cache_clear()
    with contextlib.ExitStack() as stack:
        stack.callback(cached.cache_clear)
        stack.enter_context(_patch(gcs_utils, "get_kvstore_for_gcs", file_kvstore))
        stack.enter_context(_patch(gcs_utils, "is_hierarchical_namespace_enabled", lambda p: False))
        try:
            yield
        finally:
            if previous is None:
                fsspec_classes.pop("gcs", None)
            else:
                fsspec.register_implementation("gcs", previous, clobber=True)


@contextlib.contextmanager
def _patch(module, name, value):
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)
