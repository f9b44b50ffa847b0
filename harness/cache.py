"""The one cache primitive: publish a file or folder atomically, build a cached thing once, hash tensors and files.

Every cached artefact of the harness (result cells, retrieval runs, checkpoints, adapters, corpus stores, indexes,
embeddings, the converted default model) is written the same way:

* :func:`atomic_write` / :func:`atomic_write_json` / :func:`publish`: the content goes to a *fixed* temporary
  name beside the target (:func:`temp_path`, ``.<name>.tmp``, or a staging name the caller picks), is fsynced (a
  file) and moved onto the target with ``os.replace``; on failure the temporary is removed. The caller holds the
  target's lock, so one fixed name is enough, and a SIGKILL mid-write leaves at most that one temporary, which
  the next write of the same target replaces (a random name would leave a new leftover per kill).
* :func:`build_once`: take a ``filelock.FileLock`` beside the target, check whether it is already built (before
  the lock, so a built target costs no lock, and again under it), else build it and publish it atomically.

Hashes (:func:`file_hash`, :func:`tensor_hash`, :func:`safetensors_hash`) are hex sha256 digests, cut to
``length`` hex characters where a caller persists a prefix; each definition is part of stored keys and values,
so none of them may change.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from filelock import FileLock

PathLike = str | os.PathLike

# --------------------------------------------------------------------------------------------- atomic writes


def temp_path(target: PathLike) -> Path:
    """The fixed temporary name beside ``target``: ``.<name>.tmp``."""
    target = Path(target)
    return target.with_name(f".{target.name}.tmp")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


_UMASK_LOCK = threading.Lock()


def _shareable(path: Path) -> None:
    """Give ``path`` (and what a folder holds) the modes a plain ``open`` or ``mkdir`` would: some writers
    (safetensors, tempfile) make files 0600 and folders 0700, so a checkpoint could not be read by a co-worker or
    copied to a shared disk as is."""
    with _UMASK_LOCK:  # reading the umask means setting it; threads of this process must not see the 0
        umask = os.umask(0)
        os.umask(umask)
    paths = [path, *path.rglob("*")] if path.is_dir() and not path.is_symlink() else [path]
    for item in paths:
        if item.is_symlink():
            continue
        os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~umask)


def publish(target: PathLike, write: Callable[[Path], Any], *, staging: PathLike | None = None) -> Path:
    """Make ``target`` (a file or a folder) by ``write(staging)``, then move ``staging`` onto it; returns ``target``.

    ``staging`` defaults to :func:`temp_path`; ``write`` must create it (a file, or a folder with its files). What
    an earlier, killed write left at ``staging`` is removed first. A file is fsynced before the move; an existing
    ``target`` folder is removed first (``os.replace`` cannot replace a non-empty folder). On any failure the
    staging path is removed and ``target`` is left as it was. The caller holds ``target``'s lock.
    """
    target = Path(target)
    staging = temp_path(target) if staging is None else Path(staging)
    _remove(staging)
    try:
        write(staging)
        if not os.path.lexists(staging):
            raise RuntimeError(f"writing {target} left nothing at its staging path {staging}")
        _shareable(staging)
        if staging.is_file():
            _fsync_file(staging)
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
        elif os.path.lexists(target):
            _remove(target)
        os.replace(staging, target)
    except BaseException:
        _remove(staging)
        raise
    return target


def atomic_write(path: PathLike, data: str | bytes | Callable[[IO[Any]], Any], *, binary: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (via :func:`temp_path`); returns ``path``.

    ``data``: text (written as UTF-8), bytes, or a writer called with the open handle, which is a UTF-8 text
    handle, or a binary one when ``binary``. The caller holds ``path``'s lock.
    """
    binary = binary or isinstance(data, bytes)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") if binary else open(tmp, "w", encoding="utf-8") as handle:
            if callable(data):
                data(handle)
            else:
                handle.write(data)  # type: ignore[arg-type]  # bytes go to the binary handle, text to the text one

    return publish(path, write)  # which fsyncs the file before moving it into place


def _json_text(
    value: Any, *, indent: int | None = 2, sort_keys: bool = False, ensure_ascii: bool = True, newline: bool = False
) -> str:
    """``json.dumps`` with these settings, plus a final newline when ``newline``."""
    return json.dumps(value, indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii) + ("\n" if newline else "")


def atomic_write_json(
    path: PathLike,
    value: Any,
    *,
    indent: int | None = 2,
    sort_keys: bool = False,
    ensure_ascii: bool = True,
    newline: bool = False,
) -> Path:
    """Write the JSON text of ``value`` to ``path`` atomically; returns ``path``.

    The defaults are ``json.dumps(value, indent=2)``; each file keeps the formatting it always had (the result
    store's are ``sort_keys=True, ensure_ascii=False, newline=True``), so its bytes do not change.
    """
    return atomic_write(path, _json_text(value, indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii, newline=newline))


# ------------------------------------------------------------------------------------------------ build once


def _exists(path: Path) -> bool:
    return os.path.lexists(path)


def build_once(
    target: PathLike,
    build: Callable[[Path], Any],
    *,
    is_built: Callable[[Path], bool] = _exists,
    lock: PathLike | None = None,
    staging: PathLike | None = None,
    in_place: bool = False,
    on_stale: Callable[[Path], Any] | None = None,
    timeout: float = -1,
) -> Path:
    """``target``, built by ``build`` unless ``is_built(target)``; returns ``target``.

    ``is_built`` (default: ``target`` exists) is asked before the lock (a built target takes no lock) and again
    under it (another process may have built it while this one waited). The lock is ``lock``, default
    ``<target>.lock`` beside the target, waited on for ``timeout`` seconds (-1: as long as it takes).

    ``build(path)`` writes the thing at ``path``: the staging path (``staging``, default :func:`temp_path`), which
    is then published onto ``target`` as :func:`publish` does; or, with ``in_place``, ``target`` itself, for a
    build that publishes its own files (a resumable build, several files published in a set order).
    ``on_stale(target)`` runs under the lock when ``target`` exists but is not built (damaged, or of an older
    layout), e.g. to set it aside; by default the publish replaces it.
    """
    target = Path(target)
    if is_built(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = Path(f"{target}.lock") if lock is None else Path(lock)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path), timeout=timeout):
        if is_built(target):
            return target
        if on_stale is not None and os.path.lexists(target):
            on_stale(target)
        if in_place:
            build(target)
        else:
            publish(target, build, staging=staging)
    return target


# ---------------------------------------------------------------------------------------------------- hashes


def _hex(digest: Any, length: int | None) -> str:
    return digest.hexdigest() if length is None else digest.hexdigest()[:length]


def update_with_file(digest: Any, path: PathLike) -> Any:
    """Feed the bytes of the file at ``path`` into the hashlib object ``digest`` (streamed); returns ``digest``."""
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest


def file_hash(path: PathLike, *, length: int | None = None) -> str:
    """sha256 (hex, the first ``length`` characters when given) of the file's bytes."""
    return _hex(update_with_file(hashlib.sha256(), path), length)


def _tensor_bytes(tensor: Any) -> bytes:
    import torch

    return tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def tensor_hash(tensor: Any, *, length: int | None = None) -> str:
    """sha256 (hex, the first ``length`` characters when given) of a tensor's shape and values as float32:
    ``"(n, d)|float32|"`` then its fp32 bytes, whatever its dtype or device."""
    import torch

    data = tensor.detach().to("cpu", torch.float32).contiguous()
    digest = hashlib.sha256(f"{tuple(data.shape)}|float32|".encode())
    digest.update(_tensor_bytes(data))
    return _hex(digest, length)


def safetensors_hash(folder: PathLike, *, length: int | None = None) -> str:
    """sha256 (hex, the first ``length`` characters when given) over every tensor of the folder's
    ``*.safetensors`` files in sorted-name order, each as ``"<name>|<dtype>|<shape>|"`` then its stored bytes:
    independent of sharding and file metadata."""
    from safetensors import safe_open

    folder = Path(folder)
    where: dict[str, Path] = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(file, framework="pt") as handle:
            where.update({name: file for name in handle.keys()})  # noqa: SIM118 - safe_open has no __iter__
    digest = hashlib.sha256()
    for name in sorted(where):
        with safe_open(where[name], framework="pt") as handle:
            tensor = handle.get_tensor(name).contiguous()
        digest.update(f"{name}|{str(tensor.dtype).removeprefix('torch.')}|{tuple(tensor.shape)}|".encode())
        digest.update(_tensor_bytes(tensor))
    return _hex(digest, length)
