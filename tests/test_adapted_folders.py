"""Adapted encoders on disk: listing, last use and pruning (``xlmt-sklearn adapted``).

Every fine-tune stays on disk (about the base model's size, one per fold of a grid
search); these tests pin what is listed, what each rule removes, that a running
fine-tune and anything not the package's own are never touched, and what a fitted
estimator does once its encoder is gone."""

from __future__ import annotations

import json
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest

from tests._models import tweet_like_texts
from xlmt_sklearn import XLMTFineTunedVectorizer
from xlmt_sklearn._filelock import file_lock
from xlmt_sklearn.adapt._adapted_folders import list_adapted, remove_adapted, select
from xlmt_sklearn.adapt._folder import ADAPTED_ENV
from xlmt_sklearn.cli import main
from xlmt_sklearn.internals import clear_model_registry

DAY = 86400.0


def _age(path: Path, days: float) -> None:
    when = time.time() - days * DAY
    os.utime(path, (when, when))


def _ready(root: Path, key: str, days: float = 0.0) -> Path:
    """An adapted folder as the package writes it (adapted.json naming its key)."""
    folder = root / key
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"w" * 2000)
    info = {"key": key, "base": "/models/e5-small", "n_texts": 12, "classes": ["a", "b"]}
    (folder / "adapted.json").write_text(json.dumps(info))
    _age(folder, days)
    return folder


@pytest.fixture
def root(tmp_path):
    """An adapted root with fine-tunes of each kind, and things that are not ours."""
    r = tmp_path / "adapted"
    _ready(r, "1" * 32)
    _ready(r, "2" * 32, days=40)
    work = r / f".work-{'3' * 32}"  # an interrupted fine-tune: its epoch checkpoint
    work.mkdir()
    (work / "checkpoint.pt").write_bytes(b"c" * 3000)
    _age(work, 2)
    # Not ours: other names, a 32-hex folder without adapted.json or naming another key,
    # a symlink to one of ours, a file.
    for name in (".my-notes", "notes", "5" * 32):
        (r / name).mkdir()
        (r / name / "keep.txt").write_text("mine")
    other = _ready(r, "6" * 32)
    (other / "adapted.json").write_text(json.dumps({"key": "7" * 32}))
    (r / ("8" * 32)).symlink_to(r / ("1" * 32))
    (r / "readme.txt").write_text("mine")
    return r


def _keys(folders) -> list[str]:
    return sorted(f.key[0] for f in folders)


def _untouched(root: Path) -> bool:
    return (
        all((root / n / "keep.txt").exists() for n in (".my-notes", "notes", "5" * 32))
        and (root / "readme.txt").exists()
    )


def test_only_the_packages_folders_are_listed(root):
    folders = list_adapted(root)
    assert _keys(folders) == ["1", "2", "3"]
    by = {f.key[0]: f for f in folders}
    assert [by[k].state for k in "123"] == ["ready", "ready", "interrupted"]
    assert by["1"].base == "/models/e5-small" and (by["1"].n_texts, by["1"].n_classes) == (12, 2)
    assert by["3"].bytes == 3000 and by["1"].bytes > 2000
    assert folders[0].key[0] == "2"  # least recently used first


def test_each_rule_selects_its_folders(root):
    folders = list_adapted(root)
    assert _keys(select(folders, interrupted=True)) == ["3"]
    assert _keys(select(folders, unused_days=30)) == ["2"]
    assert _keys(select(folders, unused_days=1)) == ["2", "3"]
    assert _keys(select(folders, everything=True)) == ["1", "2", "3"]
    assert select(folders) == []


def test_a_running_fine_tune_is_listed_as_training_and_never_removed(root):
    with file_lock(root / f".lock-{'3' * 32}", wait_s=0.0) as held:  # as a fit holds it
        assert held
        [work] = [f for f in list_adapted(root) if f.interrupted]
        assert work.state == "training" and select([work], interrupted=True) == []
        assert remove_adapted(work) is False
        assert work.path.is_dir()
    [work] = [f for f in list_adapted(root) if f.interrupted]
    assert work.state == "interrupted" and remove_adapted(work) is True
    assert not work.path.exists() and not list(root.glob(".trash-*"))


def test_a_missing_root_lists_nothing(tmp_path):
    assert list_adapted(tmp_path / "nowhere") == []


# ----------------------------------------------------------------------------- CLI
def test_cli_info_lists_encoders_and_interrupted_fine_tunes(root, capsys):
    assert main(["adapted", "info", "--dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "encoders:    2 (" in out and "interrupted: 1 (3.0 kB), 0 training now" in out
    assert out.count("/models/e5-small  12 texts, 2 classes") == 2


def test_cli_prune_dry_run_then_prune(root, capsys):
    args = ["adapted", "prune", "--interrupted", "--unused-days", "30", "--dir", str(root)]
    assert main([*args, "--dry-run"]) == 0
    assert "would remove 2 adapted folders" in capsys.readouterr().out
    assert _keys(list_adapted(root)) == ["1", "2", "3"]
    (root / f".trash-{'9' * 32}").mkdir()  # a removal that was interrupted
    assert main(args) == 0
    assert "removed 2 adapted folders" in capsys.readouterr().out
    assert _keys(list_adapted(root)) == ["1"]
    assert not list(root.glob(".trash-*")) and _untouched(root)


def test_cli_prune_needs_a_rule_and_an_existing_folder(root, tmp_path, capsys):
    assert main(["adapted", "prune", "--dir", str(root)]) == 2
    err = capsys.readouterr().err
    assert "--unused-days N" in err and "--interrupted" in err and "--all" in err
    assert main(["adapted", "prune", "--all", "--dir", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["adapted", "prune", "--unused-days", "-1", "--dir", str(root)]) == 2
    assert _keys(list_adapted(root)) == ["1", "2", "3"]


def test_cli_prune_reports_a_folder_it_cannot_remove(root, monkeypatch, capsys):
    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("xlmt_sklearn.backends._convert.os.rename", refuse)
    assert main(["adapted", "prune", "--unused-days", "30", "--dir", str(root)]) == 1
    captured = capsys.readouterr()
    assert f"could not remove {root / ('2' * 32)}: Permission denied" in captured.err
    assert "removed 0 adapted folders" in captured.out
    assert _keys(list_adapted(root)) == ["1", "2", "3"]


def test_cli_prune_all_keeps_a_running_fine_tune_and_says_so(root, capsys):
    with file_lock(root / f".lock-{'3' * 32}", wait_s=0.0):
        assert main(["adapted", "prune", "--all", "--dir", str(root)]) == 0
    captured = capsys.readouterr()
    assert "its fine-tune is running" in captured.err and "removed 2 adapted" in captured.out
    assert _keys(list_adapted(root)) == ["3"] and _untouched(root)


# ------------------------------------------------------------------ real fine-tunes
def test_use_is_recorded_and_a_pruned_encoder_is_trained_again(
    tiny_model_dir, tmp_path, monkeypatch, capsys
):
    """A real fine-tune: a reuse by ``fit`` and an unpickle mark it used; once pruned, its
    fitted estimator's transform says what happened and how to fix it, and a new fit
    trains the same weights again."""
    monkeypatch.setenv(ADAPTED_ENV, str(tmp_path / "adapted"))
    texts = tweet_like_texts(24)
    labels = np.array(["neg", "pos"] * 12)

    def fitted():
        return XLMTFineTunedVectorizer(str(tiny_model_dir), device="cpu", progress=False,
                                       epochs=1, train_batch_size=8).fit(texts, labels)  # fmt: skip

    vec = fitted()
    first = vec.transform(texts[:4])
    [folder] = list_adapted()
    _age(folder.path, 60)
    assert not fitted().training_["trained"]  # reused: marked used
    assert select(list_adapted(), unused_days=30) == []
    _age(folder.path, 60)
    restored = pickle.loads(pickle.dumps(vec))
    assert select(list_adapted(), unused_days=30) == []  # unpickled: marked used
    _age(folder.path, 60)

    assert main(["adapted", "prune", "--unused-days", "30"]) == 0
    assert "removed 1 adapted folders" in capsys.readouterr().out
    clear_model_registry()  # as in a new process: the loaded encoder is not kept
    with pytest.raises(OSError, match=r"no longer exists.*adapted prune.*Fit it again"):
        restored.transform(texts[:4])
    again = fitted()
    assert again.training_["trained"]
    np.testing.assert_array_equal(again.transform(texts[:4]), first)


def test_cli_uses_the_environments_folder(root, monkeypatch, capsys):
    monkeypatch.setenv(ADAPTED_ENV, str(root))
    assert main(["adapted", "info"]) == 0
    assert f"folder:      {root}" in capsys.readouterr().out
