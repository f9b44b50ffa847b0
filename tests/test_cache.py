"""harness.cache: atomic writes leave no temporary behind, build_once builds once (also across racing processes and
threads), and the hashes are exactly the values stored keys and caches already hold."""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from harness import cache, checkpoints, models, store
from harness.errors import HarnessError
from harness.retrieval import RetrieverContext


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------------------ atomic writes


def test_atomic_write_replaces_the_content_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "value.txt"
    cache.atomic_write(target, "first\n")
    cache.atomic_write(target, "zweite Zeile é\n")
    assert target.read_bytes() == "zweite Zeile é\n".encode()
    cache.atomic_write(target, b"\x00\x01bytes")
    assert target.read_bytes() == b"\x00\x01bytes"
    cache.atomic_write(target, lambda handle: handle.write("from a writer\n"))
    assert target.read_text(encoding="utf-8") == "from a writer\n"
    cache.atomic_write(target, lambda handle: handle.write(b"binary writer"), binary=True)
    assert target.read_bytes() == b"binary writer"
    assert _entries(tmp_path) == ["value.txt"]
    assert cache.temp_path(target) == tmp_path / ".value.txt.tmp"


def test_a_failing_writer_leaves_the_old_content_and_no_temporary(tmp_path):
    target = tmp_path / "value.json"
    cache.atomic_write(target, "old")

    def half_then_fail(handle):
        handle.write("half of the new con")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        cache.atomic_write(target, half_then_fail)
    assert target.read_text() == "old" and _entries(tmp_path) == ["value.json"]
    with pytest.raises(KeyboardInterrupt):
        cache.atomic_write(target, lambda handle: (_ for _ in ()).throw(KeyboardInterrupt))
    assert target.read_text() == "old" and _entries(tmp_path) == ["value.json"]


def test_what_a_killed_write_left_is_replaced_by_the_next_write(tmp_path):
    target = tmp_path / "run.jsonl"
    cache.temp_path(target).write_text("a torn line from a SIGKILLed writer, much longer than the real content " * 10)
    cache.atomic_write(target, "whole\n")
    assert target.read_text() == "whole\n" and _entries(tmp_path) == ["run.jsonl"]
    staging = cache.temp_path(tmp_path / "folder")
    (staging / "sub").mkdir(parents=True)
    (staging / "sub" / "junk").write_text("left by a kill")
    cache.publish(tmp_path / "folder", lambda tmp: (tmp.mkdir(), (tmp / "a.txt").write_text("a")))
    assert _entries(tmp_path) == ["folder", "run.jsonl"] and _entries(tmp_path / "folder") == ["a.txt"]


def test_a_checkpoint_is_staged_only_under_the_fixed_temporary_name(tmp_path, monkeypatch):
    # safetensors' own file writer stages in a random .tmpXXXXXX beside the target (seen with 0.8), which a kill
    # mid-write leaves in the store for good; checkpoints must be serialized in memory and written by the cache.
    import safetensors.torch

    def file_writer(*args, **kwargs):
        raise AssertionError("a checkpoint was written by safetensors' file writer")

    monkeypatch.setattr(safetensors.torch, "serialize_file", file_writer)
    target = tmp_path / "spring-x.safetensors"
    cache.temp_path(target).write_bytes(b"torn by a kill")
    tokens = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    digest = checkpoints.save_virtual_tokens(target, tokens, {"n": 2})
    assert _entries(tmp_path) == ["spring-x.safetensors"]
    read, metadata = checkpoints.load_virtual_tokens(target, hidden_size=3)
    assert torch.equal(read, tokens) and metadata == {"n": "2", "tensor_hash": digest}
    assert digest == checkpoints.tensor_hash(tokens) and checkpoints.readable_checkpoint(target)


def test_atomic_write_json_keeps_each_callers_bytes(tmp_path):
    value = {"b": [1, 2], "a": "é", "n": None}
    path = cache.atomic_write_json(tmp_path / "default.json", value)
    assert path.read_text(encoding="utf-8") == json.dumps(value, indent=2)  # retrieval meta/recall, index metadata
    cache.atomic_write_json(tmp_path / "store.json", value, indent=2, sort_keys=True, ensure_ascii=False, newline=True)
    assert (tmp_path / "store.json").read_bytes() == (
        json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    ).encode("utf-8")  # the result store's spec.json and metrics.json
    cache.atomic_write_json(tmp_path / "memo.json", value, indent=1, sort_keys=True)
    assert (tmp_path / "memo.json").read_text() == json.dumps(value, indent=1, sort_keys=True)  # weights-hashes.json
    assert _entries(tmp_path) == ["default.json", "memo.json", "store.json"]


def test_publish_replaces_a_folder_whole_or_not_at_all(tmp_path):
    target = tmp_path / "index"
    target.mkdir()
    (target / "old.npy").write_text("old")

    def new_index(staging: Path) -> None:
        staging.mkdir()
        (staging / "new.npy").write_text("new")

    def broken_index(staging: Path) -> None:
        new_index(staging)
        raise RuntimeError("tokenizer crashed")

    with pytest.raises(RuntimeError):
        cache.publish(target, broken_index)
    assert _entries(tmp_path) == ["index"] and _entries(target) == ["old.npy"]
    cache.publish(target, new_index)
    assert _entries(tmp_path) == ["index"] and _entries(target) == ["new.npy"]
    with pytest.raises(RuntimeError, match="left nothing"):
        cache.publish(tmp_path / "nothing", lambda staging: None)
    cache.publish(tmp_path / "named", new_index, staging=tmp_path / ".named.staging")
    assert _entries(tmp_path) == ["index", "named"]


# --------------------------------------------------------------------------------------------------- build once


def test_build_once_builds_once_and_takes_no_lock_when_built(tmp_path):
    target = tmp_path / "thing.txt"
    calls: list[Path] = []

    def build(path: Path) -> None:
        calls.append(path)
        path.write_text("built")

    assert cache.build_once(target, build) == target
    assert cache.build_once(target, build) == target
    assert calls == [tmp_path / ".thing.txt.tmp"] and target.read_text() == "built"
    assert _entries(tmp_path) == ["thing.txt", "thing.txt.lock"]
    (tmp_path / "thing.txt.lock").unlink()
    cache.build_once(target, build)
    assert _entries(tmp_path) == ["thing.txt"]  # already built: the lock was not taken


def test_build_once_rebuilds_what_is_not_built_and_can_set_it_aside(tmp_path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "partial").write_text("a folder without its marker file")

    def built(path: Path) -> bool:
        return (path / "weights").is_file()

    def build(staging: Path) -> None:
        staging.mkdir()
        (staging / "weights").write_text("w")

    cache.build_once(folder, build, is_built=built, staging=tmp_path / ".adapter.staging")
    assert _entries(folder) == ["weights"] and _entries(tmp_path) == ["adapter", "adapter.lock"]

    checkpoint = tmp_path / "spring.safetensors"
    checkpoint.write_text("damaged")
    set_aside: list[Path] = []

    def aside(path: Path) -> None:
        set_aside.append(path)
        path.replace(path.with_name(f".damaged-{path.name}"))

    cache.build_once(
        checkpoint,
        lambda path: path.write_text("whole"),
        is_built=lambda p: p.read_text() == "whole" if p.exists() else False,
        on_stale=aside,
        in_place=True,
        lock=tmp_path / "locks" / "spring.lock",
    )
    assert set_aside == [checkpoint] and checkpoint.read_text() == "whole"
    assert (tmp_path / ".damaged-spring.safetensors").read_text() == "damaged" and (tmp_path / "locks" / "spring.lock").exists()


def test_a_failed_build_publishes_nothing_and_the_next_call_builds(tmp_path):
    target = tmp_path / "index"

    def failing(staging: Path) -> None:
        staging.mkdir()
        raise HarnessError("bad corpus")

    with pytest.raises(HarnessError):
        cache.build_once(target, failing)
    assert _entries(tmp_path) == ["index.lock"]
    cache.build_once(target, lambda staging: staging.mkdir())
    assert target.is_dir()


def _slow_build(staging: Path) -> None:
    """A build that takes long enough for every racer to wait on the lock; counts its runs in builds.log."""
    with open(staging.parent / "builds.log", "a") as log:
        log.write("built\n")
    time.sleep(0.5)
    staging.write_text("the one build")


def _race(target: str, start) -> str:
    start.wait()
    return cache.build_once(Path(target), _slow_build).read_text()


def test_racing_processes_build_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    target = tmp_path / "shared.bin"
    with context.Manager() as manager, context.Pool(3) as pool:
        results = pool.starmap(_race, [(str(target), manager.Barrier(3))] * 3)
    assert results == ["the one build"] * 3
    assert (tmp_path / "builds.log").read_text() == "built\n"
    assert sorted(_entries(tmp_path)) == ["builds.log", "shared.bin", "shared.bin.lock"]


def test_racing_threads_build_once(tmp_path):
    target = tmp_path / "shared.bin"
    start = threading.Barrier(4)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(_race(str(target), start))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["the one build"] * 4 and (tmp_path / "builds.log").read_text() == "built\n"


# ------------------------------------------------------------------------------------------------------- hashes
# The expected values were computed with the hashers this module replaced (checkpoints.tensor_hash,
# models._tensor_hash / _files_hash / _file_sha256, store.file_sha256, methods.trained._file_hash,
# retrievers.dense.weights_identity) before the change: stored keys, checkpoints and caches hold them.


@pytest.fixture
def inputs(tmp_path):
    tensor = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 7
    folder = tmp_path / "weights"
    folder.mkdir()
    save_file(
        {"b.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "a.bias": torch.ones(4, dtype=torch.bfloat16)},
        str(folder / "model-00001.safetensors"),
    )
    save_file({"c.weight": torch.arange(4, dtype=torch.int64)}, str(folder / "model-00002.safetensors"))
    data = tmp_path / "data.bin"
    data.write_bytes(b"harness cache\n" * 100000)  # more than one read block
    small = tmp_path / "small.txt"
    small.write_bytes(b"one line\n")
    return tensor, folder, data, small


def test_tensor_hash_is_the_checkpoint_identity_it_always_was(inputs):
    tensor, *_ = inputs
    assert cache.tensor_hash(tensor, length=20) == checkpoints.tensor_hash(tensor) == "f6b52aec2b82d81a6eea"
    assert checkpoints.tensor_hash(tensor.to(torch.bfloat16)) == "4fdca1c55c2ad5726509"  # hashed as its fp32 values
    assert cache.tensor_hash(tensor).startswith("f6b52aec2b82d81a6eea") and len(cache.tensor_hash(tensor)) == 64


def test_safetensors_hash_is_the_weights_hash_it_always_was(inputs, tmp_path, monkeypatch):
    _, folder, data, small = inputs
    expected = "47b357201d017bb98d6af4955690d790b666015986e80d6a1b19f88122e84b7e"
    assert cache.safetensors_hash(folder) == expected
    assert models._tensor_hash(folder) == "sha256:" + expected
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    assert models.weights_hash(folder) == "sha256:" + expected
    memo = (tmp_path / "cache" / "weights-hashes.json").read_text()
    (key,) = json.loads(memo)  # sha256 of this test's paths, sizes and mtimes
    assert memo == '{\n "' + key + '": "sha256:' + expected + '"\n}'  # the old writer's bytes: indent 1, no final newline
    assert models._files_hash([data, small]) == "sha256:1c5698425b25d9deabd9b6234c51d4175749d942eed77e5890a9c16ee229158d"


def test_file_hash_is_the_digest_each_caller_stored(inputs):
    _, _, data, small = inputs
    full = "554fc9b264610b9a930340dac6116ffab6d5777ce81ee17851cae6b3180a386a"
    assert cache.file_hash(data) == store.file_sha256(data) == full  # predictions_sha256, gguf_sha256
    assert cache.file_hash(data, length=20) == "554fc9b264610b9a9303"  # a LoRA adapter's checkpoint hash
    assert cache.file_hash(small) == "3887c2cd3bec16420dc71507a74cf7f0a5effdd361f6d9cbe27b77831de8f65f"
    assert cache.file_hash(small, length=20) == "3887c2cd3bec16420dc7"


def test_dense_weights_identity_is_unchanged(inputs, tmp_path, monkeypatch):
    from retrievers.dense import weights_identity

    _, folder, _, _ = inputs
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    expected = "c03eb6d0648ca829cc760ccb5209ad000418e4d658e3990a1d6da1620cea2581"
    assert weights_identity(folder) == expected
    assert weights_identity(folder) == expected  # from the memo
    memo = tmp_path / "cache" / "model-hashes"
    assert [p.read_text() for p in memo.glob("*.txt")] == [expected] and not list(memo.glob(".*"))


# ------------------------------------------------------------------------------------------- retriever options


def test_a_misspelt_retriever_option_gets_a_suggestion_on_one_line():
    context = RetrieverContext(options=(("kk", "1.2"),))
    with pytest.raises(HarnessError) as error:
        context.check_options("bm25", ("k1", "b", "method"))
    assert str(error.value) == "retriever 'bm25' has no option 'kk'; valid options: b, k1, method. Did you mean 'k1'?"
    with pytest.raises(HarnessError, match=r"^retriever 'none' has no option 'kk'; valid options: none\.$"):
        context.check_options("none", ())


def test_published_files_and_folders_get_the_umask_modes(tmp_path):
    """Writers such as safetensors make 0600 files; a published artefact is readable as a plain open() makes it."""
    import os
    import stat

    from harness.cache import publish

    umask = os.umask(0o022)
    try:

        def private_folder(staging):
            staging.mkdir(mode=0o700)
            (staging / "weights.bin").write_bytes(b"w")
            os.chmod(staging / "weights.bin", 0o600)

        folder = publish(tmp_path / "adapter", private_folder)
        file = publish(tmp_path / "tokens.bin", lambda staging: (staging.write_bytes(b"t"), os.chmod(staging, 0o600)))
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755
        assert stat.S_IMODE((folder / "weights.bin").stat().st_mode) == 0o644
        assert stat.S_IMODE(file.stat().st_mode) == 0o644
    finally:
        os.umask(umask)
