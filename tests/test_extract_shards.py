"""sinterlab-extract: shards fill one cache that the training run then reads whole; jobs never
extract an image twice at once; a killed shard resumes without redoing finished images."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess

import pytest

from sinterlab.features.cache import EmbeddingCache
from sinterlab.study.training import run_experiment
from tests.conftest import FAST, run
from tests.test_bad_input import run_script
from tests.test_evaluation_report import dead_pid


def shard_args(descriptor, cache, tmp_path, *extra):
    return [*FAST, f"data.descriptor={descriptor}", f"features.cache_dir={cache}",
            f"hydra.run.dir={tmp_path / 'extract'}", *extra]


@pytest.mark.slow
def test_two_shards_fill_the_cache_that_training_reads(tiny_descriptor, tmp_path, make_cfg,
                                                       monkeypatch, capsys):
    cache = tmp_path / "cache"
    said = []
    for shard in (0, 1):
        code, out, err = run_script("extract", shard_args(
            tiny_descriptor, cache, tmp_path / str(shard), f"shard={shard}", "shards=2"),
            monkeypatch, capsys)
        assert code == 0, err
        said.append(out)
    assert "shard 0 of 2: 12 images, 0 already cached, 12 extracted" in said[0]
    assert "shard 1 of 2: 12 images, 0 already cached, 12 extracted" in said[1]
    cfg = make_cfg(f"features.cache_dir={cache}", "protocol.folds=3", "protocol.seeds=[0]",
                   "evaluation.gallery.enabled=false")
    metrics = run_experiment(cfg, tmp_path / "run")
    assert metrics.cache.from_cache == 24 and metrics.cache.extracted == 0


def test_a_killed_shard_resumes_without_redoing_finished_images(tiny_descriptor, tmp_path,
                                                                monkeypatch, capsys):
    cache = tmp_path / "cache"
    save, calls = EmbeddingCache.save, []

    def save_then_ctrl_c(self, sha, entry):
        path = save(self, sha, entry)
        calls.append(sha)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return path
    monkeypatch.setattr(EmbeddingCache, "save", save_then_ctrl_c)
    args = shard_args(tiny_descriptor, cache, tmp_path, "shard=0", "shards=2")
    code, _, err = run_script("extract", args, monkeypatch, capsys)
    assert code == 130 and "3 of 12 images have cached embeddings" in err
    monkeypatch.setattr(EmbeddingCache, "save", save)
    code, out, err = run_script("extract", args, monkeypatch, capsys)
    assert code == 0, err
    assert "12 images, 3 already cached, 9 extracted" in out
    assert not list(cache.rglob("*.claim"))  # every claim fulfilled or released


def test_an_image_claimed_by_a_live_job_is_left_to_it_and_a_dead_ones_taken_over(tmp_path):
    cache = EmbeddingCache(tmp_path, "m", "0" * 64, {"x": 1})
    assert cache.claim("a") and not EmbeddingCache(tmp_path, "m", "0" * 64, {"x": 1}).has("a")
    alive = subprocess.Popen(["sleep", "60"])
    try:
        (cache.folder / "b.claim").write_text(json.dumps(
            {"pid": alive.pid, "host": socket.gethostname()}))
        assert not cache.claim("b")  # another job is extracting it
    finally:
        alive.kill()
        alive.wait()
    (cache.folder / "c.claim").write_text(json.dumps(
        {"pid": dead_pid(), "host": socket.gethostname()}))
    assert cache.claim("c")  # its job was killed: this one takes the image


@pytest.mark.parametrize("override, words", [
    ("features.strategy=ddp", "features.strategy=ddp is not supported"),
    ("trainer=ddp", "trainer.strategy=ddp is not supported")])
def test_ddp_is_refused_with_what_scales_instead(tiny_descriptor, tmp_path, monkeypatch,
                                                 capsys, override, words):
    code, _, err = run_script("extract", shard_args(tiny_descriptor, tmp_path / "cache",
                                                    tmp_path, override), monkeypatch, capsys)
    assert code == 2, err[-2000:]
    assert words in err and ("sinterlab-extract" in err or "multirun" in err)
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_shards_as_a_submitit_local_multirun(tiny_descriptor, tmp_path):
    """The launcher a cluster uses, on this machine: two shard jobs, one cache."""
    cache = tmp_path / "cache"
    done = run("sinterlab-extract", "-m", *FAST, f"data.descriptor={tiny_descriptor}",
               f"features.cache_dir={cache}", "shard=0,1", "shards=2",
               "hydra/launcher=submitit_local", f"hydra.sweep.dir={tmp_path / 'sweep'}",
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(list(cache.rglob("*.npz"))) == 24
