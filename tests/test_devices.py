"""Device lists (one model replica per device) and the card-sized token budget.

No GPU is needed: the scheduling across devices is the same code for CPUs
(``["cpu", "cpu:0"]`` are two registry entries, two replicas), the overlap of
computation and delivery can be forced on the CPU
(``flow_tuning.TUNING.overlap_delivery = "always"``), and the CUDA budget is computed
from ``torch.cuda.mem_get_info``, replaced here by a fake.
"""

from __future__ import annotations

import re
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from xlmt_sklearn import EmbeddingCache, XLMTTokenVectorizer, XLMTVectorizer
from xlmt_sklearn.backends._devices import resolve_devices
from xlmt_sklearn.backends._encoders import EncodeOptions, TorchEncoder, cuda_token_budget
from xlmt_sklearn.flow import _scheduler
from xlmt_sklearn.flow import _tuning as flow_tuning
from xlmt_sklearn.flow._batching import MAX_AUTO_TOKENS, token_budget
from xlmt_sklearn.flow._pipeline import encode

TEXTS = [("word " * (1 + (i * 7) % 19)) + f"text {i}" for i in range(30)]

# ----------------------------------------------------------------------- token budget


def test_token_budget_grows_with_free_memory_and_stays_in_bounds():
    base = dict(itemsize=2, hidden_size=768, intermediate_size=3072, num_heads=12, longest=64)
    budgets = [token_budget(free, n_states=1, **base) for free in (1 << 20, 1 << 30, 8 << 30)]
    assert budgets[0] == 64  # one text of the longest length always fits
    assert budgets[0] < budgets[1] < budgets[2] <= MAX_AUTO_TOKENS
    assert token_budget(1 << 40, n_states=1, **base) == MAX_AUTO_TOKENS
    # Keeping every layer's hidden states costs memory per token: a smaller budget.
    assert token_budget(1 << 30, n_states=13, **base) < budgets[1]
    # Per-token bytes are exact: 2 * ((1 + 7) * 768 + 3072 + 12 * 64) = 19,968.
    assert token_budget(19_968 * 2_000, n_states=1, **base) == 1_000


def _fake_loaded(device: str, dtype: str = "float16") -> SimpleNamespace:
    config = SimpleNamespace(
        hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12
    )
    return SimpleNamespace(device=device, dtype=dtype, model=SimpleNamespace(config=config))


def _token_cap(loaded, max_tokens, layers=(-1,), longest=40):
    encoder = TorchEncoder(SimpleNamespace(device=loaded.device, dtype=loaded.dtype))
    encoder.loaded = lambda: loaded
    return encoder.token_cap(EncodeOptions(layers=layers, max_tokens=max_tokens), longest)


def test_auto_budget_is_no_cap_on_cpu_and_sized_from_free_memory_on_cuda(monkeypatch):
    assert _token_cap(_fake_loaded("cpu", "float32"), "auto") is None
    assert _token_cap(_fake_loaded("cuda:0"), 512) == 512
    assert _token_cap(_fake_loaded("cuda:0"), None) is None
    asked = []

    def mem_get_info(device):
        asked.append(device)
        return (4 << 30, 80 << 30)

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    got = _token_cap(_fake_loaded("cuda:1"), "auto")
    assert asked == [torch.device("cuda:1")]
    assert got == token_budget(4 << 30, 2, 768, 3072, 12, 1, 40)
    all_layers = _token_cap(_fake_loaded("cuda:1"), "auto", (-1, -2))
    assert all_layers == token_budget(4 << 30, 2, 768, 3072, 12, 13, 40) < got
    fp32 = cuda_token_budget(_fake_loaded("cuda:1", "float32"), (-1,), 40)
    assert fp32 == token_budget(4 << 30, 4, 768, 3072, 12, 1, 40)


def test_auto_budget_is_the_default_and_changes_nothing_on_cpu(tiny_model_dir):
    auto = XLMTVectorizer(str(tiny_model_dir), device="cpu", batch_size=4).fit()
    assert auto.get_params()["max_tokens"] == "auto"
    none = XLMTVectorizer(str(tiny_model_dir), device="cpu", batch_size=4, max_tokens=None)
    np.testing.assert_array_equal(auto.transform(TEXTS), none.fit().transform(TEXTS))


def test_max_tokens_rejects_other_strings(tiny_model_dir):
    with pytest.raises(ValueError, match="max_tokens"):
        XLMTVectorizer(str(tiny_model_dir), max_tokens="big").fit()


# ----------------------------------------------------------------------- device lists


def test_resolve_devices():
    assert resolve_devices("cpu") == ["cpu"]
    assert resolve_devices(["cpu", "cpu:0"]) == ["cpu", "cpu:0"]
    assert resolve_devices(("cpu",)) == ["cpu"]
    for bad, match in [
        ([], "names no device"),
        (["cpu", "cpu"], "twice"),
        (["auto", "cpu"], "must stand alone"),
        (["cpu", 0], "device names"),
        (["cpu", "meta"], "mixes kinds"),
        (["cpu", "nonsense"], "not a torch device"),
    ]:
        with pytest.raises(ValueError, match=match):
            resolve_devices(bad)


def test_a_device_list_survives_clone_and_pickle(tiny_model_dir):
    import pickle

    from sklearn.base import clone

    vec = XLMTVectorizer(str(tiny_model_dir), device=["cpu", "cpu:0"])
    assert clone(vec).get_params()["device"] == ["cpu", "cpu:0"]
    assert pickle.loads(pickle.dumps(vec.fit())).device == ["cpu", "cpu:0"]


@pytest.mark.parametrize("kind", ["pooled", "tokens"])
@pytest.mark.parametrize(
    ("devices", "delivery"),
    [(["cpu", "cpu:0"], "cuda"), (["cpu"], "always"), (["cpu", "cpu:0"], "always")],
    ids=["two", "one-courier", "two-courier"],
)
def test_device_lists_and_the_courier_give_the_single_device_result(
    tiny_model_dir, tmp_path, monkeypatch, kind, devices, delivery
):
    """Batches spread over replicas (windows of one text may finish on either) or delivered
    by the courier thread: the same vectors, and a cache that then serves all of them."""
    cls = XLMTVectorizer if kind == "pooled" else XLMTTokenVectorizer
    opts = dict(batch_size=2, max_length=16, truncation="window", stride=4)
    one = cls(str(tiny_model_dir), device="cpu", **opts).fit().transform(TEXTS)
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    monkeypatch.setattr(flow_tuning.TUNING, "overlap_delivery", delivery)
    vec = cls(str(tiny_model_dir), device=devices, cache=cache, **opts).fit()
    first, again = vec.transform(TEXTS), vec.transform(TEXTS)  # again: all from the cache
    for got in (first, again):
        if kind == "pooled":
            np.testing.assert_allclose(got, one, atol=1e-6)
        else:
            for a, b in zip(got, one, strict=True):
                np.testing.assert_allclose(a, b, atol=1e-6)
    per_text = 1 if kind == "pooled" else 2  # token features: + the tokenization
    assert cache.stats.entries == per_text * len(set(TEXTS))


@pytest.mark.parametrize("delivery", ["never", "always"])
def test_every_device_takes_batches_and_callbacks_never_overlap(
    tiny_model_dir, monkeypatch, delivery
):
    from xlmt_sklearn.backends._loading import get_model

    monkeypatch.setattr(flow_tuning.TUNING, "overlap_delivery", delivery)

    vec = XLMTVectorizer(str(tiny_model_dir), device=["cpu", "cpu:0"], batch_size=1).fit()
    encoders = vec._encoders()
    models = [get_model(e.spec) for e in encoders]
    assert models[0] is not models[1] and models[1].device == "cpu:0"
    used, active, overlaps = set(), [0], []
    guard = threading.Lock()
    for m in models:
        m.model.register_forward_hook(lambda mod, args, out, d=m.device: used.add(d))

    def on_done(idx, vals):
        with guard:
            active[0] += 1
            overlaps.append(active[0] > 1)
        threading.Event().wait(0.002)  # widen the window a concurrent call would need
        with guard:
            active[0] -= 1

    from xlmt_sklearn.flow._tokenize import tokenize

    enc = tokenize(
        models[0].tokenizer, TEXTS * 2, prefix_ids=models[0].special_prefix,
        suffix_ids=models[0].special_suffix, max_length=32,
    )  # fmt: skip
    out = _deliver(encoders, enc, EncodeOptions(batch_size=1), on_done)
    assert sorted(out) == list(range(60))
    assert used == {"cpu", "cpu:0"} and len(overlaps) == 60 and not any(overlaps)


def test_an_error_on_one_device_stops_the_run_and_is_raised():
    done, lock = [], threading.Lock()

    def work(batch, device):
        if int(batch[0]) == 3:
            raise RuntimeError("device 1 broke")
        with lock:
            done.append(int(batch[0]))
        return int(batch[0])

    devices = [
        SimpleNamespace(device=f"cpu:{m}", is_out_of_memory=lambda exc: False) for m in range(2)
    ]
    batches = [np.array([i]) for i in range(50)]
    got = []
    with pytest.raises(RuntimeError, match="device 1 broke"):
        for result in _scheduler.computed(devices, batches, work):
            got.append(result)
    assert 3 not in done and len(done) < 50
    assert sorted(got) == sorted(done)  # everything computed reached the caller


def test_when_two_devices_fail_the_error_raised_names_both():
    both = threading.Barrier(2)

    def work(batch, device):
        both.wait(timeout=10)  # each device holds one batch before either fails
        raise RuntimeError(f"{device.device} broke")

    devices = [
        SimpleNamespace(device=f"cpu:{m}", is_out_of_memory=lambda exc: False) for m in range(2)
    ]
    with pytest.raises(RuntimeError, match="broke") as info:
        list(_scheduler.computed(devices, [np.array([i]) for i in range(4)], work))
    notes = getattr(info.value, "__notes__", [])
    first = str(info.value).split()[0]
    other = "cpu:1" if first == "cpu:0" else "cpu:0"
    assert notes == [f"Another device also failed: RuntimeError: {other} broke"]


def test_out_of_memory_halves_the_batch_after_releasing_the_failed_one():
    """A batch that runs out of memory is split in halves, retried once the failed
    forward's objects are gone (the error's traceback no longer holds them)."""
    import weakref

    class Tensor:  # what a failed forward leaves behind
        pass

    failed: list[weakref.ref] = []
    alive_at_retry: list[bool] = []
    released = []

    def work(batch, device):
        if failed:
            alive_at_retry.append(failed[-1]() is not None)
        if len(batch) > 2:
            scratch = Tensor()
            failed.append(weakref.ref(scratch))
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return batch.tolist()

    device = SimpleNamespace(
        device="cuda:0", is_out_of_memory=lambda exc: "out of memory" in str(exc),
        after_out_of_memory=lambda: released.append(True),
    )  # fmt: skip
    got = list(_scheduler.computed([device], [np.arange(8)], work))
    assert got == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert len(released) == 3 and alive_at_retry and not any(alive_at_retry)


def test_more_devices_than_the_registry_holds_load_once_per_call(tiny_model_dir, monkeypatch):
    """Three replicas with XLMT_SKLEARN_MAX_MODELS=2: each loads once per transform, not
    once per batch (they used to evict each other from the registry)."""
    from xlmt_sklearn.backends import _loading

    monkeypatch.setenv("XLMT_SKLEARN_MAX_MODELS", "2")
    vec = XLMTVectorizer(str(tiny_model_dir), device=["cpu", "cpu:0", "cpu:1"], batch_size=1,
                         progress=False).fit()  # fmt: skip
    texts = [f"text number {i} " * (1 + i % 5) for i in range(16)]
    before = _loading.load_count()["model"]
    out = vec.transform(texts)
    assert _loading.load_count()["model"] - before <= 3
    ref = XLMTVectorizer(str(tiny_model_dir), device="cpu", progress=False).fit_transform(texts)
    np.testing.assert_allclose(out, ref, atol=1e-5)


# ----------------------------------------------------------------------- overlapped delivery


@pytest.fixture
def overlap(monkeypatch):
    """Compute on a producer thread on the CPU too (the default does so on CUDA only)."""
    monkeypatch.setattr(flow_tuning.TUNING, "overlap_delivery", "always")


def _tiny(tiny_model_dir, **kw):
    from xlmt_sklearn.flow._tokenize import tokenize

    vec = XLMTVectorizer(str(tiny_model_dir), device="cpu", **kw).fit()
    (encoder,) = vec._encoders()
    loaded = encoder.loaded()
    enc = tokenize(
        loaded.tokenizer, TEXTS, prefix_ids=loaded.special_prefix,
        suffix_ids=loaded.special_suffix, max_length=32,
    )  # fmt: skip
    return [encoder], loaded, enc


def _deliver(encoders, enc, options, on_done):
    """Consume the encode stream as the pipeline does, handing each batch to ``on_done``."""
    out = {}
    for idx, vals in encode(encoders, enc, options):
        on_done(idx, vals)
        out.update(zip(idx.tolist(), vals, strict=True))
    return out


@pytest.mark.parametrize("mode", ["always", "never"])
def test_the_next_batch_computes_while_one_is_delivered(tiny_model_dir, monkeypatch, mode):
    monkeypatch.setattr(flow_tuning.TUNING, "overlap_delivery", mode)
    encoders, loaded, enc = _tiny(tiny_model_dir)
    started = [0]
    second_started = threading.Event()

    def count(module, args):
        started[0] += 1
        if started[0] == 2:
            second_started.set()

    hook = loaded.model.register_forward_pre_hook(count)  # also turns off the packed path
    waited = []

    def on_done(idx, vals):
        if not waited:  # the first delivery: does batch 2 start meanwhile?
            waited.append(second_started.wait(10 if mode == "always" else 0.5))

    try:
        _deliver(encoders, enc, EncodeOptions(batch_size=4), on_done)
    finally:
        hook.remove()
    assert waited == [mode == "always"]


def test_a_delivery_error_stops_the_computation_and_is_raised(tiny_model_dir, overlap):
    encoders, loaded, enc = _tiny(tiny_model_dir)
    computed = []
    hook = loaded.model.register_forward_pre_hook(lambda mod, args: computed.append(1))

    def on_done(idx, vals):
        raise ValueError("the sink broke")

    try:
        with pytest.raises(ValueError, match="the sink broke"):
            _deliver(encoders, enc, EncodeOptions(batch_size=1), on_done)
    finally:
        hook.remove()
    # The batch being delivered, those queued and the one computing: not all 30.
    assert len(computed) <= 1 + _scheduler.DELIVERY_DEPTH + 2 < len(TEXTS)


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_everything_computed_is_delivered_when_the_computation_fails(
    tiny_model_dir, overlap, error
):
    encoders, loaded, enc = _tiny(tiny_model_dir)
    calls = [0]

    def fail_fifth(module, args):
        calls[0] += 1
        if calls[0] == 5:
            raise error

    hook = loaded.model.register_forward_pre_hook(fail_fifth)
    delivered = []

    def on_done(idx, vals):
        threading.Event().wait(0.01)  # slower than computing: batches queue up
        delivered.extend(idx)

    try:
        with pytest.raises(type(error), match=f"^{re.escape(str(error))}$"):
            _deliver(encoders, enc, EncodeOptions(batch_size=1), on_done)
    finally:
        hook.remove()
    assert len(delivered) == 4  # the four finished batches, none lost


@pytest.mark.parametrize("mode", ["never", "always"])
def test_a_memory_error_while_delivering_is_not_a_device_out_of_memory(
    tiny_model_dir, monkeypatch, mode
):
    """Only the device's computation is halved and retried on out-of-memory errors."""
    monkeypatch.setattr(flow_tuning.TUNING, "overlap_delivery", mode)
    encoders, loaded, enc = _tiny(tiny_model_dir)
    sizes = []
    hook = loaded.model.register_forward_pre_hook(
        lambda mod, args, kwargs: sizes.append(len(kwargs["input_ids"])), with_kwargs=True
    )

    def on_done(idx, vals):
        raise MemoryError("out of memory growing the output")  # reads like a device OOM

    try:
        with pytest.raises(MemoryError, match="growing the output"):
            _deliver(encoders, enc, EncodeOptions(batch_size=8), on_done)
    finally:
        hook.remove()
    # Planned batches of 8 (and the last, of 6) only: nothing was halved and recomputed.
    assert sizes and sizes[0] == 8 and set(sizes) <= {8, 6}


def test_encoders_that_pad_get_the_least_padding_plan(tiny_model_dir):
    """An encoder with ``pads_batches`` (the CPU runtimes) is handed batches cut where
    padding is least; the vectors are the same."""
    from xlmt_sklearn.backends._runtime import RuntimeEncoder
    from xlmt_sklearn.flow._tokenize import tokenize

    assert RuntimeEncoder.pads_batches and not TorchEncoder.pads_batches
    texts = [" ".join(["word"] * (1 + (7 * i) % 40)) for i in range(48)]
    runs = {}
    for pads in (False, True):
        (encoder,) = XLMTVectorizer(str(tiny_model_dir), device="cpu").fit()._encoders()
        encoder.pads_batches = pads
        widths, encode_batch = [], encoder.encode

        def spy(rows, options, pool_rows, widths=widths, encode_batch=encode_batch):
            widths.append([len(r) for r in rows])
            return encode_batch(rows, options, pool_rows)

        encoder.encode = spy
        loaded = encoder.loaded()
        enc = tokenize(
            loaded.tokenizer, texts, prefix_ids=loaded.special_prefix,
            suffix_ids=loaded.special_suffix, max_length=64,
        )  # fmt: skip
        out = _deliver([encoder], enc, EncodeOptions(batch_size=16), lambda idx, vals: None)
        padded = sum(len(w) * max(w) for w in widths)
        runs[pads] = (padded, np.stack([out[i] for i in range(len(texts))]))
    assert runs[True][0] < 0.9 * runs[False][0]
    np.testing.assert_allclose(runs[True][1], runs[False][1], atol=1e-5)


# ------------------------------------------------ "auto"/"cpu" without importing torch


@pytest.mark.parametrize(
    ("version", "imported", "cpu_only"),
    [("2.13.0+cpu", False, True), ("2.13.0+cpu.cxx11.abi", False, True),
     ("2.13.0+cu126", False, False), ("2.13.0", False, False), ("2.13.0+cpu", True, False)],
)  # fmt: skip
def test_a_cpu_only_build_is_told_by_its_version(monkeypatch, version, imported, cpu_only):
    from xlmt_sklearn.backends import _devices

    monkeypatch.setattr(_devices, "installed_version", lambda dist: version)
    monkeypatch.setattr(_devices, "sys", SimpleNamespace(modules={"torch": 1} if imported else {}))
    assert _devices._cpu_only_torch() is cpu_only


def test_a_fit_served_from_the_cache_never_imports_torch(tiny_model_dir, tmp_path):
    from importlib import metadata

    from tests._subprocesses import run_python

    if "+cpu" not in metadata.version("torch"):
        pytest.skip("the installed torch is not a CPU-only (+cpu) build")
    cache = tmp_path / "c.sqlite"
    XLMTVectorizer(str(tiny_model_dir), backend="torch", cache=str(cache)).fit_transform(TEXTS)
    code = (
        "import sys; from xlmt_sklearn import XLMTVectorizer; "
        f"v = XLMTVectorizer({str(tiny_model_dir)!r}, backend='torch', cache={str(cache)!r}); "
        f"X = v.fit_transform({TEXTS!r}); print(X.shape, 'torch' in sys.modules)"
    )
    proc = run_python(code, HF_HUB_OFFLINE="1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-1] == "False", proc.stdout
