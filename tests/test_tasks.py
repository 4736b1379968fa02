import numpy as np
import pytest

from bench.effects import get_effect
from bench.tasks import Task


def make(tones, effect="peq4", split="test", seed=0):
    return Task(tones, get_effect(effect), split, segment_samples=6000, seed=seed)


def test_examples_are_deterministic_and_cached(tones):
    a = make(tones).example(3)
    b = make(tones).example(3)  # a fresh Task object: nothing shared but (task, seed, index)
    for k in ("input", "reference", "target", "true_params01"):
        assert np.array_equal(getattr(a, k), getattr(b, k))
    c = make(tones).example(4)
    assert not np.array_equal(a.input, c.input) or not np.array_equal(a.true_params01, c.true_params01)
    d = make(tones, seed=1).example(3)
    assert not np.array_equal(a.true_params01, d.true_params01)

    first = make(tones).examples(4)
    again = make(tones).examples(4)  # read back from the on-disk cache
    for x, y in zip(first, again, strict=True):
        assert np.array_equal(x.target, y.target) and np.array_equal(x.true_params01, y.true_params01)
        assert x.source_id == y.source_id and x.param_names == y.param_names


def test_example_structure(tones):
    task = make(tones, "distortion")
    ex = task.example(0)
    eff = task.effect
    assert ex.input.shape == ex.reference.shape == ex.target.shape == (6000,)
    # target is the input processed with the true settings; reference is the other segment processed alike
    assert np.allclose(ex.target, eff.process(ex.input, 24000, ex.true_params01), atol=1e-6)
    assert not np.allclose(ex.reference, ex.target)
    assert ex.source_id.startswith("test-")
    assert abs(ex.meta["start_a"] - ex.meta["start_b"]) >= 6000  # non-overlapping segments


def test_every_source_gives_an_equal_share_of_a_tasks_examples(tones):
    """Sources take turns, so every one of a task's sources is met (n_sources in every cell is the split's) and a
    per-source mean rests on as many examples as any other; the order differs between tasks."""
    from collections import Counter

    task = make(tones)  # 2 test sources
    counts = Counter(task.example(i).source_id for i in range(7))
    assert sorted(counts.values()) == [3, 4]
    ids = [make(tones, "delay").example(i).source_id for i in range(4)]
    assert sorted(Counter(ids).values()) == [2, 2]


def test_the_example_carries_its_sources_identity(tones):
    from bench.corpora import SourceSpec

    class Takes(type(tones)):
        """Two takes of one voice and another voice: three recordings, two identities."""

        def plan(self):
            return [SourceSpec(sid, "v", "test", {"f0": 220.0}, identity="voice-a") for sid in ("a1", "a2")] + \
                [SourceSpec("b", "w", "test", {"f0": 330.0}, identity="voice-b")]

    t = Task(Takes(sample_rate=24000, seed=0, seconds=1.5), get_effect("peq4"), "test", segment_samples=6000)
    assert {t.example(i).source_id for i in range(6)} == {"voice-a", "voice-b"}


def test_splits_use_only_their_sources(tones):
    for split in ("train", "valid", "test"):
        ids = {make(tones, split=split).example(i).source_id for i in range(6)}
        assert all(i.startswith(split) for i in ids)


def test_torch_dataset_view(tones):
    from bench.torchdata import loader

    tasks = [make(tones, "peq4", "train"), make(tones, "delay", "train")]
    batch = next(iter(loader(tasks, 4, batch_size=4)))
    assert batch["input"].shape == (4, 6000)
    assert batch["params"].shape == (4, 12)  # padded to the larger effect
    assert batch["params"][1, 3:].isnan().all() and not batch["params"][0].isnan().any()
    ex = tasks[1].example(0)
    assert np.array_equal(batch["target"][1].numpy(), ex.target)


def test_too_short_sources_fail_clearly(tones):
    task = Task(tones, get_effect("gain"), "test", segment_samples=24000, seed=0)
    with pytest.raises(ValueError, match="too short for two segments"):
        task.example(0)
