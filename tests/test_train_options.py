"""The fine-tune's recipe options: weight averaging, a probe-initialised head, label smoothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests._finetune import N, labelled
from tests._finetune import fast_ft as _ft
from xlmt_sklearn import normalize_tweet
from xlmt_sklearn.adapt import _train


def _saved(folder) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(next(Path(folder).glob("*.safetensors"))))


@pytest.fixture(scope="module")
def data():
    return labelled()


def _snapshots(monkeypatch) -> list[dict[str, np.ndarray]]:
    """The encoder's trainable weights after every optimizer step of the next fine-tunes."""
    seen: list[dict[str, np.ndarray]] = []
    real = _train._Trainer.update

    def update(self):
        real(self)
        seen.append({n: p.detach().numpy().copy() for n, p in self.model.named_parameters()
                     if p.requires_grad})  # fmt: skip

    monkeypatch.setattr(_train._Trainer, "update", update)
    return seen


@pytest.mark.parametrize("share, averaged", [(0.0, 1), (0.5, 6), (0.01, 1)])
def test_the_saved_encoder_is_the_mean_of_the_last_steps_weights(
    tiny_model_dir, data, tmp_path, monkeypatch, share, averaged
):
    seen = _snapshots(monkeypatch)
    texts, labels = data
    vec = _ft(tiny_model_dir, tmp_path, train_average=share).fit(texts, labels)
    assert len(seen) == 12  # 2 epochs of 48 texts in batches of 8
    saved = _saved(vec.adapted_path_)
    for name in seen[-1]:
        want = np.mean([s[name] for s in seen[-averaged:]], axis=0)
        assert np.abs(saved[name] - want).max() < 1e-6, name
    if averaged > 1:  # and not the last step's weights
        assert max(np.abs(saved[n] - seen[-1][n]).max() for n in seen[-1]) > 1e-5


def test_an_averaged_fine_tune_resumes_with_its_running_mean(tiny_model_dir, data, tmp_path):
    from xlmt_sklearn.adapt import _folder

    texts, labels = data
    real = _folder.fine_tune
    first = {"call": True}

    def interrupt(step, total, loss):
        if step == total - 1:  # in the last epoch: the mean began two epochs before
            raise KeyboardInterrupt

    def fine_tune(*args, **kwargs):
        kwargs["progress"] = interrupt if first.pop("call", False) else None
        return real(*args, **kwargs)

    _folder.fine_tune = fine_tune
    try:
        with pytest.raises(KeyboardInterrupt):
            _ft(tiny_model_dir, tmp_path / "x", epochs=3, train_average=0.9).fit(texts, labels)
        vec = _ft(tiny_model_dir, tmp_path / "x", epochs=3, train_average=0.9).fit(texts, labels)
    finally:
        _folder.fine_tune = real
    assert vec.training_["resumed_from_epoch"] == 2
    straight = _ft(tiny_model_dir, tmp_path / "y", epochs=3, train_average=0.9).fit(texts, labels)
    assert np.array_equal(vec.transform(texts[:8]), straight.transform(texts[:8]))


def _base_features(model_dir, texts) -> np.ndarray:
    """Mean-pooled last layer of the base model, written directly with transformers."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok, model = (
        AutoTokenizer.from_pretrained(str(model_dir)),
        AutoModel.from_pretrained(str(model_dir)).eval(),
    )
    with torch.no_grad():
        enc = tok(texts, padding=True, truncation=True, max_length=96, return_tensors="pt")
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        return ((hidden * mask).sum(1) / mask.sum(1)).numpy()


@pytest.mark.parametrize("n_classes", [3, 2])
def test_a_probe_head_starts_as_a_logistic_regression_on_base_features(
    tiny_model_dir, data, n_classes
):
    import torch
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoTokenizer

    texts = [normalize_tweet(t) for t in data[0]]
    y = np.arange(N) % n_classes
    spec = _train.TrainSpec(head_init="probe", batch_size=8)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        t = _train._Trainer(tiny_model_dir, spec, N, n_classes, "cpu")
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    ids = tok(texts, truncation=True, max_length=96)["input_ids"]
    t.probe(ids, y, tok.pad_token_id)
    assert t.model.training  # back to training mode (dropout) for the steps

    X = _base_features(tiny_model_dir, texts)
    ref = LogisticRegression(C=1.0, max_iter=2000).fit(X, y)
    with torch.no_grad():
        logits = t.head(torch.as_tensor(X)).numpy()
    # The same classifier: its probabilities, and its predictions.
    proba = torch.softmax(torch.as_tensor(logits), 1).numpy()
    assert np.abs(proba - ref.predict_proba(X)).max() < 1e-4
    assert np.array_equal(logits.argmax(1), ref.predict(X))


def test_the_probe_head_changes_the_fine_tune_and_its_key(tiny_model_dir, data, tmp_path):
    texts, labels = data
    a = _ft(tiny_model_dir, tmp_path).fit(texts, labels)
    b = _ft(tiny_model_dir, tmp_path, train_head_init="probe").fit(texts, labels)
    assert a.adapted_path_ != b.adapted_path_
    assert np.abs(a.transform(texts[:6]) - b.transform(texts[:6])).max() > 1e-4
    c = _ft(tiny_model_dir, tmp_path, train_head_init="probe").fit(texts, labels)
    assert not c.training_["trained"]  # the same key: reused


def test_label_smoothing_mixes_the_uniform_target_into_the_loss(tiny_model_dir):
    import torch

    spec = _train.TrainSpec(label_smoothing=0.2)
    t = _train._Trainer(tiny_model_dir, spec, 8, 3, "cpu")
    t.model.eval()  # no dropout: the two computations see the same activations
    batch = torch.randint(5, 50, (4, 7))
    mask = torch.ones_like(batch)
    target = torch.tensor([0, 1, 2, 1])
    got = float(t.loss(batch, mask, target).detach())
    with torch.no_grad():
        pooled = t.model(input_ids=batch, attention_mask=mask).last_hidden_state.mean(1)
        logp = torch.log_softmax(t.head(pooled), 1)
        nll = -logp[torch.arange(4), target]
        ref = float((0.8 * nll - 0.2 * logp.mean(1)).mean())
    assert abs(got - ref) < 1e-5


@pytest.mark.parametrize(
    "param, value",
    [("train_average", 1.0), ("train_average", -0.1), ("train_head_init", "zeros"),
     ("train_label_smoothing", 1.0)],
)  # fmt: skip
def test_recipe_options_outside_their_range_are_refused_before_training(
    tiny_model_dir, data, tmp_path, param, value
):
    with pytest.raises(ValueError, match=param):
        _ft(tiny_model_dir, tmp_path, **{param: value}).fit(*data)
    assert not any(tmp_path.iterdir())  # nothing trained


@pytest.mark.parametrize(
    "options", [{"train_head_init": "probe"}, {"train_label_smoothing": 0.1},
                {"train_head_init": "probe", "train_label_smoothing": 0.1}],
)  # fmt: skip
def test_classification_options_are_refused_under_the_contrastive_objective(
    tiny_model_dir, data, tmp_path, options
):
    # They would change the key and nothing else: a second fine-tune of equal weights.
    est = _ft(tiny_model_dir, tmp_path, objective="contrastive", **options)
    with pytest.raises(ValueError, match="objective='contrastive'") as err:
        est.fit(*data)
    for name in options:
        assert name in str(err.value)
    assert not any(tmp_path.iterdir())  # refused before the model load and the fine-tune


def test_the_recipe_options_at_their_defaults_keep_earlier_keys():
    from xlmt_sklearn.adapt._folder import adapted_key

    spec = _train.TrainSpec()
    plain = adapted_key("c" * 64, ["a", "b"], np.array([0, 1]), spec)
    for change in ({"average": 0.5}, {"head_init": "probe"}, {"label_smoothing": 0.1}):
        other = _train.TrainSpec(**change)
        assert adapted_key("c" * 64, ["a", "b"], np.array([0, 1]), other) != plain
    # The key the default recipe had before these options existed (package 0.x).
    assert plain == "dd96709439e4bd8d339aef99e2439b3e"
