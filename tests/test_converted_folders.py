"""Converted models on disk: listing, last use and pruning (``xlmt-sklearn converted``).

Conversions of fine-tunes outlive the adapted folders they came from (about the model's
size each, one per fold of a grid search); these tests pin what is listed, what each rule
removes, and that nothing but the package's own folders is ever touched."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from xlmt_sklearn.backends._convert import CONVERTED_ENV, ensure_converted
from xlmt_sklearn.backends._converted_folders import list_converted, remove_converted, select
from xlmt_sklearn.cli import main

DAY = 86400.0


def _folder(root: Path, model: dict, age_days: float = 0.0, key: str | None = None) -> Path:
    """A converted folder as the package writes it (manifest naming its key)."""
    key = key or uuid.uuid4().hex
    folder = root / key
    folder.mkdir(parents=True)
    (folder / "model.bin").write_bytes(b"x" * 1000)
    manifest = {"format": 1, "key": key, "model": model,
                "files": {"model.bin": {"size": 1000, "sha256": "0" * 64}}}  # fmt: skip
    (folder / "manifest.json").write_text(json.dumps(manifest))
    when = time.time() - age_days * DAY
    os.utime(folder, (when, when))
    return folder


def _local(path: Path) -> dict:
    return {"runtime": "openvino", "model": str(path), "revision": None, "content": "ab" * 32,
            "layers": [-1], "weights": "float32", "source": str(path)}  # fmt: skip


HUB = {"runtime": "onnxruntime", "model": "cardiffnlp/twitter-xlm-roberta-base",
       "revision": "c" * 40, "content": "c" * 40, "layers": [-1], "weights": "float32"}  # fmt: skip


@pytest.fixture
def root(tmp_path):
    """A converted root with one of each kind, and things that are not ours."""
    r = tmp_path / "converted"
    live = tmp_path / "live-model"
    live.mkdir()
    _folder(r, _local(live), key="1" * 32)
    _folder(r, _local(tmp_path / "deleted-fine-tune"), key="2" * 32)  # source gone
    _folder(r, HUB, age_days=40, key="3" * 32)
    _folder(r, {**_local(Path("relative/model")), "source": None}, key="4" * 32)
    # Not ours: other names, a 32-hex folder without a manifest or naming another key,
    # a symlink to one of ours, a file.
    for name in (".my-notes", "notes", "5" * 32):
        (r / name).mkdir()
        (r / name / "keep.txt").write_text("mine")
    _folder(r, _local(tmp_path / "gone"), key="6" * 32)
    other = json.loads((r / ("6" * 32) / "manifest.json").read_text())
    other["key"] = "7" * 32
    (r / ("6" * 32) / "manifest.json").write_text(json.dumps(other))
    (r / ("8" * 32)).symlink_to(r / ("2" * 32))
    (r / "readme.txt").write_text("mine")
    return r


def _keys(folders) -> list[str]:
    return sorted(f.path.name[0] for f in folders)


def test_only_the_packages_folders_are_listed(root):
    folders = list_converted(root)
    assert _keys(folders) == ["1", "2", "3", "4"]
    by = {f.path.name[0]: f for f in folders}
    assert [by[k].orphaned for k in "1234"] == [False, True, False, False]  # hub, relative: no
    assert by["3"].model == HUB["model"] and by["3"].runtime == "onnxruntime"
    assert all(f.bytes > 1000 for f in folders)  # the weights and the manifest
    assert folders[0].path.name[0] == "3"  # least recently used first


def test_each_rule_selects_its_folders(root):
    folders = list_converted(root)
    assert _keys(select(folders, orphaned=True)) == ["2"]
    assert _keys(select(folders, unused_days=30)) == ["3"]
    assert _keys(select(folders, unused_days=30, orphaned=True)) == ["2", "3"]
    assert _keys(select(folders, everything=True)) == ["1", "2", "3", "4"]
    assert select(folders) == []


def test_removing_leaves_no_trash_and_a_gone_folder_is_skipped(root):
    orphan = select(list_converted(root), orphaned=True)[0]
    assert remove_converted(orphan) is True
    assert remove_converted(orphan) is False  # already gone
    assert not orphan.path.exists()
    assert not list(root.glob(".trash-*"))
    assert (root / "notes" / "keep.txt").exists() and (root / ("5" * 32)).exists()


def test_a_missing_root_lists_nothing(tmp_path):
    assert list_converted(tmp_path / "nowhere") == []


def test_a_reused_conversion_is_marked_used(tmp_path):
    def build(folder: Path) -> None:
        (folder / "model.bin").write_bytes(b"weights")

    key = uuid.uuid4().hex
    folder = ensure_converted(key, {"model": "m"}, build, root=tmp_path)
    old = time.time() - 60 * DAY
    os.utime(folder, (old, old))
    assert ensure_converted(key, {"model": "m"}, build, root=tmp_path) == folder
    assert time.time() - folder.stat().st_mtime < DAY


# ----------------------------------------------------------------------------- CLI
def test_cli_info_lists_sizes_and_gone_sources(root, capsys):
    assert main(["converted", "info", "--dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "models:  4 (" in out and "1 with their source gone" in out
    assert out.count("(source gone)") == 1 and "twitter-xlm-roberta-base" in out


def test_cli_prune_dry_run_then_prune(root, capsys):
    args = ["converted", "prune", "--orphaned", "--unused-days", "30", "--dir", str(root)]
    assert main([*args, "--dry-run"]) == 0
    assert "would remove 2 converted models" in capsys.readouterr().out
    assert _keys(list_converted(root)) == ["1", "2", "3", "4"]
    assert main(args) == 0
    assert "removed 2 converted models" in capsys.readouterr().out
    assert _keys(list_converted(root)) == ["1", "4"]
    assert (root / ".my-notes" / "keep.txt").exists() and (root / "readme.txt").exists()


def test_cli_prune_needs_a_rule_and_an_existing_folder(root, tmp_path, capsys):
    assert main(["converted", "prune", "--dir", str(root)]) == 2
    err = capsys.readouterr().err
    assert "--unused-days N" in err and "--orphaned" in err and "--all" in err
    assert main(["converted", "prune", "--all", "--dir", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["converted", "prune", "--unused-days", "-1", "--dir", str(root)]) == 2
    assert _keys(list_converted(root)) == ["1", "2", "3", "4"]


def test_cli_prune_reports_a_folder_it_cannot_remove(root, monkeypatch, capsys):
    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("xlmt_sklearn.backends._converted_folders.os.rename", refuse)
    assert main(["converted", "prune", "--orphaned", "--dir", str(root)]) == 1
    captured = capsys.readouterr()
    assert f"could not remove {root / ('2' * 32)}: Permission denied" in captured.err
    assert "removed 0 converted models" in captured.out
    assert _keys(list_converted(root)) == ["1", "2", "3", "4"]


def test_cli_uses_the_environments_folder(root, monkeypatch, capsys):
    monkeypatch.setenv(CONVERTED_ENV, str(root))
    assert main(["converted", "info"]) == 0
    assert f"folder:  {root}" in capsys.readouterr().out


# ------------------------------------------------------------------ real conversion
def test_a_deleted_fine_tunes_conversion_is_pruned_and_rebuilt(
    tiny_model_dir, tmp_path, monkeypatch, capsys
):
    """A real OpenVINO conversion of a local folder records the folder; once the folder is
    deleted, ``--orphaned`` removes the conversion, and a copy of the model converts again."""
    pytest.importorskip("openvino")
    from xlmt_sklearn import XLMTVectorizer

    monkeypatch.setenv(CONVERTED_ENV, str(tmp_path / "converted"))
    source = tmp_path / "adapted" / "abc"
    shutil.copytree(tiny_model_dir, source)

    def embed(model: Path) -> np.ndarray:
        vec = XLMTVectorizer(str(model), backend="openvino", device="cpu", progress=False)
        return vec.fit_transform(["hola mundo", "ok"])

    first = embed(source)
    [folder] = list_converted()
    assert folder.source == source.resolve() and not folder.orphaned
    shutil.copytree(source, tmp_path / "copy")
    shutil.rmtree(source)
    assert main(["converted", "prune", "--orphaned"]) == 0
    assert "removed 1 converted models" in capsys.readouterr().out
    assert list_converted() == []
    np.testing.assert_allclose(embed(tmp_path / "copy"), first, atol=1e-5)
    assert len(list_converted()) == 1
