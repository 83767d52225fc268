"""XLMTFineTunedVectorizer: determinism, once per fold, cache separation, interruption, pickles."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone

from tests._finetune import N, labelled
from tests._finetune import fast_ft as _ft
from xlmt_sklearn import XLMTVectorizer


def _folders(root) -> list[Path]:
    return sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))


@pytest.fixture(scope="module")
def data():
    return labelled()


def test_adapted_features_match_a_transformers_reference(tiny_model_dir, data, tmp_path):
    import torch
    from transformers import AutoModel, AutoTokenizer

    from xlmt_sklearn import normalize_tweet

    texts, labels = data
    vec = _ft(tiny_model_dir, tmp_path).fit(texts, labels)
    assert vec.training_["trained"] and vec.training_["steps"] == 2 * N // 8
    assert list(vec.classes_) == ["neg", "neu", "pos"]
    got = vec.transform(texts[:6])
    folder = vec.adapted_path_
    tok, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        enc = tok([normalize_tweet(t) for t in texts[:6]], padding=True, truncation=True,
                  max_length=128, return_tensors="pt")  # fmt: skip
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        ref = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    assert np.abs(got - ref).max() < 1e-5
    base = XLMTVectorizer(str(tiny_model_dir), device="cpu", progress=False).fit()
    assert np.abs(got - base.transform(texts[:6])).max() > 1e-3  # it did adapt


def test_same_seed_same_weights_other_seed_or_objective_other(tiny_model_dir, data, tmp_path):
    texts, labels = data
    a = _ft(tiny_model_dir, tmp_path / "a").fit(texts, labels).transform(texts[:8])
    b = _ft(tiny_model_dir, tmp_path / "b").fit(texts, labels).transform(texts[:8])
    assert np.array_equal(a, b)
    c = _ft(tiny_model_dir, tmp_path / "c", seed=1).fit(texts, labels).transform(texts[:8])
    d = _ft(tiny_model_dir, tmp_path / "d", objective="contrastive").fit(texts, labels)
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, d.transform(texts[:8]))


@pytest.mark.parametrize(
    "cls, dtype",
    [("amx", "bfloat16"), ("avx512_bf16", "bfloat16"), ("avx512", "float32"), ("avx2", "float32")],
)
def test_auto_train_dtype_is_bf16_where_torch_bf16_is_the_faster(
    tiny_model_dir, data, tmp_path, monkeypatch, cls, dtype
):
    # The CPU classes of the auto rule's torch bf16 (step times: docs/finetuning.md).
    monkeypatch.setenv("XLMT_SKLEARN_CPU_CLASS", cls)
    texts, labels = data
    vec = _ft(tiny_model_dir, tmp_path, epochs=1).fit(texts[:16], labels[:16])
    assert vec.training_["spec"]["dtype"] == dtype


@pytest.mark.parametrize("batching", ["length", "random"])
def test_each_epoch_batches_every_text_once_from_the_seed_alone(batching):
    import torch

    from xlmt_sklearn.adapt._train import GROUP_BATCHES, TrainSpec, _batches

    rng = np.random.default_rng(0)
    ids = [[1] * int(n) for n in rng.integers(3, 90, size=5 * 16 * GROUP_BATCHES // 2)]
    spec = TrainSpec(batch_size=16, batching=batching)

    def epoch(seed):
        return _batches(ids, spec, torch.Generator().manual_seed(seed))

    first = epoch(0)
    assert sorted(r for b in first for r in b) == list(range(len(ids)))  # each text once
    assert all(len(b) <= 16 for b in first)
    assert epoch(0) == first and epoch(1) != first

    def padded(batches):
        return sum(max(len(ids[r]) for r in b) * len(b) for b in batches) / sum(map(len, ids))

    if batching == "length":  # few pad tokens, and the batches do not run shortest first
        assert padded(first) < 1.1 < padded(_batches(ids, TrainSpec(batching="random"),
                                                     torch.Generator().manual_seed(0)))  # fmt: skip
        widths = [max(len(ids[r]) for r in b) for b in first]
        assert widths != sorted(widths)


def test_the_batching_changes_the_fine_tune_and_its_key(tiny_model_dir, data, tmp_path):
    texts, labels = data
    a = _ft(tiny_model_dir, tmp_path / "a").fit(texts, labels)
    b = _ft(tiny_model_dir, tmp_path / "a", train_batching="length").fit(texts, labels)
    assert a.adapted_path_ != b.adapted_path_ and b.training_["trained"]
    assert not np.array_equal(a.transform(texts[:4]), b.transform(texts[:4]))


def test_a_frozen_embedding_table_stays_as_in_the_base_model(tiny_model_dir, data, tmp_path):
    from safetensors.numpy import load_file

    texts, labels = data
    a = _ft(tiny_model_dir, tmp_path / "a").fit(texts, labels)  # the default: frozen
    b = _ft(tiny_model_dir, tmp_path / "a", train_embeddings=True).fit(texts, labels)
    assert a.adapted_path_ != b.adapted_path_

    def table(folder):
        weights = load_file(str(next(Path(folder).glob("*.safetensors"))))
        return next(v for k, v in weights.items() if k.endswith("word_embeddings.weight"))

    assert np.array_equal(table(a.adapted_path_), table(tiny_model_dir))
    assert not np.array_equal(table(b.adapted_path_), table(tiny_model_dir))
    assert not np.array_equal(a.transform(texts[:4]), b.transform(texts[:4]))


def test_the_default_batching_keeps_the_keys_of_earlier_fine_tunes():
    from xlmt_sklearn.adapt._folder import adapted_key
    from xlmt_sklearn.adapt._train import TrainSpec

    # The key of this fine-tune before train_batching and train_embeddings existed
    # (package major version 0): their old defaults leave it as it was, and so do the
    # rate and decay of that time, given explicitly.
    spec = TrainSpec(embeddings=True, learning_rate=3e-5, layer_decay=1.0)
    key = adapted_key("c" * 64, ["a", "b"], np.array([0, 1]), spec)
    assert key == "beb2e7c5860063a8735523e54f376df6"


def test_grid_search_fine_tunes_once_per_fold(tiny_model_dir, data, tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline

    texts, labels = data
    pipe = make_pipeline(_ft(tiny_model_dir, tmp_path, epochs=1), LogisticRegression(max_iter=1000))
    grid = {"logisticregression__C": [0.1, 1.0, 10.0],
            "xlmtfinetunedvectorizer__pooling": ["mean", "max"]}  # fmt: skip
    GridSearchCV(pipe, grid, cv=2).fit(texts, labels)
    # 2 folds + the refit on everything; 6 candidates each reuse their fold's encoder.
    assert len(_folders(tmp_path)) == 3


def test_cross_fitted_grid_search_fine_tunes_a_fixed_set_per_fold(tiny_model_dir, data, tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline

    texts, labels = data
    pipe = make_pipeline(_ft(tiny_model_dir, tmp_path, epochs=1, cv=2),
                         LogisticRegression(max_iter=1000))  # fmt: skip
    grid = {"logisticregression__C": [0.1, 10.0],
            "xlmtfinetunedvectorizer__pooling": ["mean", "max"]}  # fmt: skip
    GridSearchCV(pipe, grid, cv=2).fit(texts, labels)
    # (2 outer folds + the refit) x (the encoder on all its texts + 2 cross-fitting folds),
    # whatever the number of candidates (4 here).
    assert len(_folders(tmp_path)) == 3 * 3


def test_cache_never_mixes_adapted_and_base_vectors(tiny_model_dir, data, tmp_path):
    texts, labels = data
    cache = str(tmp_path / "cache.sqlite")
    base = XLMTVectorizer(str(tiny_model_dir), device="cpu", progress=False, cache=cache).fit()
    before = base.transform(texts)
    vec = _ft(tiny_model_dir, tmp_path / "ad", cache=cache).fit(texts, labels)
    adapted = vec.transform(texts)
    again = clone(vec).fit(texts, labels).transform(texts)  # reused encoder, cache hits
    assert np.array_equal(adapted, again)
    assert np.array_equal(base.transform(texts), before)
    assert np.abs(adapted - before).max() > 1e-3


def test_interrupted_fine_tune_resumes_at_the_epoch_boundary(tiny_model_dir, data, tmp_path):
    from xlmt_sklearn.adapt import _folder

    texts, labels = data
    calls = {"n": 0}
    real = _folder.fine_tune

    def interrupt(step, total, loss):
        calls["n"] += 1
        if step == total - 1:  # inside the last epoch
            raise KeyboardInterrupt

    def fine_tune(*args, **kwargs):
        kwargs["progress"] = interrupt if calls["n"] == 0 else None
        return real(*args, **kwargs)

    _folder.fine_tune = fine_tune
    try:
        with pytest.raises(KeyboardInterrupt):
            _ft(tiny_model_dir, tmp_path / "x", epochs=3).fit(texts, labels)
        assert _folders(tmp_path / "x") == []  # nothing half-made is visible
        vec = _ft(tiny_model_dir, tmp_path / "x", epochs=3).fit(texts, labels)
    finally:
        _folder.fine_tune = real
    assert vec.training_["resumed_from_epoch"] == 2
    straight = _ft(tiny_model_dir, tmp_path / "y", epochs=3).fit(texts, labels)
    assert np.array_equal(vec.transform(texts[:8]), straight.transform(texts[:8]))


def test_cross_fitting_gives_out_of_fold_features(tiny_model_dir, data, tmp_path):
    texts, labels = data
    vec = _ft(tiny_model_dir, tmp_path, cv=2, epochs=1)
    oof = vec.fit_transform(texts, labels)
    assert oof.shape == (N, vec.n_features_out_)
    assert len(_folders(tmp_path)) == 3  # all + 2 folds
    assert np.abs(oof - vec.transform(texts)).max() > 1e-4
    # Any accepted container gives the same folds: a one-column array, a one-shot iterator.
    column = np.asarray(texts, dtype=object).reshape(-1, 1)
    for X in (column, iter(texts)):
        again = _ft(tiny_model_dir, tmp_path, cv=2, epochs=1).fit_transform(X, labels)
        np.testing.assert_array_equal(again, oof)
    assert len(_folders(tmp_path)) == 3  # the same folds: reused, not trained again


def test_pickles_name_the_folder_or_carry_it(tiny_model_dir, data, tmp_path):
    texts, labels = data
    light = _ft(tiny_model_dir, tmp_path / "a", epochs=1).fit(texts, labels)
    assert len(pickle.dumps(light)) < 20_000
    heavy = _ft(tiny_model_dir, tmp_path / "b", epochs=1, store_weights_in_pickle=True)
    heavy.fit(texts, labels)
    want = heavy.transform(texts[:5])
    blob = pickle.dumps(heavy)
    assert len(blob) > 100_000
    shutil.rmtree(tmp_path / "b")
    back = pickle.loads(blob)
    assert Path(back.adapted_path_).is_dir()
    assert np.array_equal(back.transform(texts[:5]), want)


def test_errors_name_the_fix(tiny_model_dir, data, tmp_path):
    texts, labels = data
    with pytest.raises(ValueError, match=r"fit\(X, y\)"):
        _ft(tiny_model_dir, tmp_path).fit(texts)
    with pytest.raises(ValueError, match="at least two classes"):
        _ft(tiny_model_dir, tmp_path).fit(texts, ["a"] * N)
    with pytest.raises(ValueError, match="one label per text"):
        _ft(tiny_model_dir, tmp_path).fit(texts, labels[:-1])
    with pytest.raises(ValueError, match="objective"):
        _ft(tiny_model_dir, tmp_path, objective="triplet").fit(texts, labels)


def test_a_fitted_adapted_featurizer_ships_to_dask_and_keeps_the_sklearn_contract(
    tiny_model_dir, data, tmp_path
):
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    import dask
    from sklearn.exceptions import NotFittedError

    from xlmt_sklearn.dask import embed_partitions

    texts, labels = data
    vec = _ft(tiny_model_dir, tmp_path, epochs=1)
    with pytest.raises(NotFittedError):
        vec.transform(texts[:2])
    assert clone(vec).get_params() == vec.get_params()
    vec.fit(texts, labels).set_output(transform="pandas")
    frame = vec.transform(pd.Series(texts[:6], index=range(10, 16)))
    assert list(frame.index) == list(range(10, 16))
    assert list(frame.columns) == list(vec.get_feature_names_out())
    with dask.config.set(scheduler="sync"):
        ddf = dd.from_pandas(pd.DataFrame({"text": texts}), npartitions=3)
        got = embed_partitions(ddf, "text", vec).compute().to_numpy()
    assert np.abs(got - vec.set_output(transform="default").transform(texts)).max() < 1e-6


def test_frozen_lower_layers_stay_as_in_the_base_model(tiny_model_dir, data, tmp_path):
    from safetensors.numpy import load_file

    texts, labels = data
    a = _ft(tiny_model_dir, tmp_path, train_frozen_layers=1).fit(texts, labels)
    b = _ft(tiny_model_dir, tmp_path).fit(texts, labels)
    assert a.adapted_path_ != b.adapted_path_  # its own key

    def layer(folder, i):
        weights = load_file(str(next(Path(folder).glob("*.safetensors"))))
        return {k: v for k, v in weights.items() if f"layer.{i}." in k}

    base, tuned = layer(tiny_model_dir, 0), layer(a.adapted_path_, 0)
    assert base and all(np.array_equal(base[k], tuned[k]) for k in base)
    upper = layer(a.adapted_path_, 1)
    assert any(not np.array_equal(v, layer(tiny_model_dir, 1)[k]) for k, v in upper.items())
    with pytest.raises(ValueError, match="train_frozen_layers=9 is more than the 2"):
        _ft(tiny_model_dir, tmp_path, train_frozen_layers=9).fit(texts, labels)


def test_layer_decay_trains_lower_layers_at_lower_rates(tiny_model_dir, data, tmp_path):
    from safetensors.numpy import load_file
    from transformers import AutoModel

    from xlmt_sklearn.adapt._train import _layer_groups

    model = AutoModel.from_pretrained(str(tiny_model_dir))
    model.get_input_embeddings().weight.requires_grad_(False)
    top, upper, lower, below = _layer_groups(model, 0.5)
    layers = model.encoder.layer
    assert {id(p) for p in upper} == {id(p) for p in layers[1].parameters()}
    assert {id(p) for p in lower} == {id(p) for p in layers[0].parameters()}
    assert {id(p) for p in below} == {id(p) for p in model.embeddings.parameters()
                                      if p.requires_grad}  # fmt: skip
    assert {id(p) for p in top} == {id(p) for p in model.pooler.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert [id(p) for p in _layer_groups(model, 1.0)[0]] == [id(p) for p in trainable]

    texts, labels = data
    a = _ft(tiny_model_dir, tmp_path, train_layer_decay=0.1).fit(texts, labels)
    b = _ft(tiny_model_dir, tmp_path, train_layer_decay=1.0).fit(texts, labels)
    assert a.adapted_path_ != b.adapted_path_  # each decay its own key

    def moved(folder, i):  # the largest change of layer i's weights from the base model
        base = load_file(str(next(Path(tiny_model_dir).glob("*.safetensors"))))
        tuned = load_file(str(next(Path(folder).glob("*.safetensors"))))
        return max(np.abs(tuned[k] - base[k]).max() for k in base if f"layer.{i}." in k)

    # Adam's steps scale with the rate: layer 0 at 1% of it moves far less.
    assert moved(a.adapted_path_, 0) < moved(b.adapted_path_, 0) / 5
    assert moved(a.adapted_path_, 1) > moved(a.adapted_path_, 0)
    with pytest.raises(ValueError, match="train_layer_decay"):
        _ft(tiny_model_dir, tmp_path, train_layer_decay=1.5).fit(texts, labels)


def test_an_encoder_without_its_layer_list_names_the_option_that_needs_it():
    import torch

    from xlmt_sklearn.adapt._train import _layer_groups, encoder_layers

    model = torch.nn.Linear(2, 2)
    model.config = type("Config", (), {"num_hidden_layers": 3})()
    with pytest.raises(ValueError, match=r"train_frozen_layers: cannot find the 3 .*=0"):
        encoder_layers(model)
    with pytest.raises(ValueError, match=r"train_layer_decay: cannot find the 3 .*=1\.0"):
        _layer_groups(model, 0.9)
    assert len(_layer_groups(model, 1.0)[0]) == 2  # no decay: no layers needed


def test_adapted_files_get_the_mode_the_umask_gives(tiny_model_dir, data, tmp_path):
    import os
    import stat

    texts, labels = data
    old = os.umask(0o027)
    try:
        folder = Path(_ft(tiny_model_dir, tmp_path, epochs=1).fit(texts, labels).adapted_path_)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir() if p.is_file()}
    assert "model.safetensors" in modes  # which safetensors writes 0600 whatever the umask
    assert set(modes.values()) == {0o640}, modes
