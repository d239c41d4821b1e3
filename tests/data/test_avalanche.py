"""Avalanche interop: exported benchmarks hold the loop's exact splits; benchmarks read back as streams."""

import numpy as np
import pytest
import torch
from avalanche.benchmarks.scenarios import benchmark_from_datasets
from avalanche.benchmarks.scenarios.deprecated.generators import nc_benchmark
from avalanche.benchmarks.utils import as_classification_dataset
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.training import LwF, Naive
from avalanche.training.plugins import EvaluationPlugin
from torch.utils.data import TensorDataset

from perennial.data import DataError, DigitsStream, SyntheticStream
from perennial.data.avalanche import AvalancheStream, holdout_split, to_avalanche


@pytest.fixture(scope="module")
def digits():
    return DigitsStream("class_incremental")


def tiny_stream() -> SyntheticStream:
    # windows of 11, 11, 11, 11 and 1 rows: the last one has no hold-out row
    return SyntheticStream(n_samples=45, window=11, n_features=3)


def rows(x: np.ndarray, y: np.ndarray) -> list:
    """The rows of a window as a sorted list, to compare windows up to row order."""
    return sorted(zip((r.tobytes() for r in x.reshape(len(x), -1)), y.tolist(), strict=True))


def tensors(dataset) -> tuple[np.ndarray, np.ndarray]:
    samples = [dataset[i] for i in range(len(dataset))]
    return np.stack([s[0].numpy() for s in samples]), np.array([int(s[1]) for s in samples])


def classification_dataset(x, y):
    data = TensorDataset(torch.as_tensor(x), torch.as_tensor(y))
    data.targets = list(y)
    return as_classification_dataset(data)


def test_holdout_split_is_the_loops_split(loop_factory):
    stream = tiny_stream()
    loop = loop_factory(stream=stream, holdout_fraction=0.3, seed=7)
    for k, w in enumerate(stream.windows()):
        train, hold = holdout_split(len(w), k, holdout_fraction=0.3, seed=7)
        split = loop.split(k)
        np.testing.assert_array_equal(w.x[train], split.train[0])
        np.testing.assert_array_equal(w.y[hold], split.holdout[1])
        np.testing.assert_array_equal(w.x[hold], split.holdout[0])
    assert len(hold) == 0 and len(train) == 1  # a one-row window is all training, as in the loop


def test_experiences_hold_exactly_the_loops_train_and_holdout_rows(digits, loop_factory):
    loop = loop_factory(stream=digits, holdout_fraction=0.25, seed=3)
    benchmark = to_avalanche(digits, holdout_fraction=0.25, seed=3)
    assert len(benchmark.train_stream) == len(benchmark.test_stream) == len(digits.windows()) == 5
    for k, (train_exp, test_exp) in enumerate(
        zip(benchmark.train_stream, benchmark.test_stream, strict=True)
    ):
        split = loop.split(k)
        for (x, y), exp in ((split.train, train_exp), (split.holdout, test_exp)):
            ex, ey = tensors(exp.dataset)
            np.testing.assert_array_equal(ex, x)
            np.testing.assert_array_equal(ey, y)
            assert exp.current_experience == k and exp.task_label == 0
        assert len(test_exp.dataset) == round(len(digits.windows()[k]) * 0.25)


def test_round_trip_gives_back_every_windows_rows_and_labels(digits):
    back = AvalancheStream(to_avalanche(digits), split="both")
    assert back.classes == digits.classes and back.feature_shape == digits.feature_shape
    assert len(back) == len(digits)
    for original, window in zip(digits.windows(), back.windows(), strict=True):
        assert window.x.dtype == np.float32 and window.y.dtype == np.int64
        assert rows(window.x, window.y) == rows(original.x, original.y)
        assert window.start == window.end == original.index
    np.testing.assert_array_equal(np.concatenate([w.time for w in back]), np.arange(1797))
    assert back.issues == []


def test_train_and_test_views_share_class_ids_and_report_an_empty_experience():
    stream = tiny_stream()
    benchmark = to_avalanche(stream)
    train = AvalancheStream(benchmark, split="train")
    test = AvalancheStream(benchmark, split="test", name="tiny-holdout")
    assert [len(w) for w in train] == [9, 9, 9, 9, 1]
    assert [len(w) for w in test] == [2, 2, 2, 2]  # the one-row window holds nothing out
    assert [(i.kind, i.source, i.window) for i in test.issues] == [("empty_window", "tiny-holdout", 4)]
    assert train.classes == test.classes == [0, 1]
    both = AvalancheStream(benchmark, split="both")
    for original, window in zip(stream.windows(), both.windows(), strict=True):
        assert rows(window.x, window.y) == rows(original.x, original.y)


def test_a_native_benchmark_reads_as_a_stream_with_its_own_labels():
    rng = np.random.default_rng(0)
    labels = [np.array([3, 7, 3, 7, 7]), np.array([12, 12, 3])]
    inputs = [rng.normal(size=(len(y), 2, 4)).astype(np.float32) for y in labels]
    benchmark = benchmark_from_datasets(
        train=[classification_dataset(x, y) for x, y in zip(inputs, labels, strict=True)]
    )
    stream = AvalancheStream(benchmark)
    assert (
        stream.classes == [3, 7, 12] and stream.feature_shape == (2, 4) and stream.name == "avalanche-train"
    )
    for x, y, window in zip(inputs, labels, stream.windows(), strict=True):
        np.testing.assert_array_equal(window.x, x)
        np.testing.assert_array_equal(np.array(stream.classes)[window.y], y)  # ids map back to the labels
        assert window.y.max() < stream.n_classes
    with pytest.raises(DataError, match=r"test stream; it has \['train'\]"):
        AvalancheStream(benchmark, split="test")


def test_a_class_incremental_avalanche_benchmark_keeps_its_class_order():
    x, y = torch.randn(60, 3), torch.arange(60) % 6
    train, test = TensorDataset(x, y), TensorDataset(x[:30], y[:30])
    train.targets, test.targets = y, y[:30]
    benchmark = nc_benchmark(train, test, n_experiences=3, task_labels=False, seed=0)
    stream = AvalancheStream(benchmark, split="test")
    assert stream.classes == list(range(6)) and stream.feature_shape == (3,)
    assert [set(w.y.tolist()) for w in stream] == [set(c) for c in benchmark.original_classes_in_exp]


@pytest.mark.filterwarnings("ignore:No loggers specified")
def test_an_avalanche_strategy_trains_and_scores_on_an_exported_benchmark(digits):
    # Avalanche's accuracy metrics read a task label from every mini-batch; exported samples carry one.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    evaluator = EvaluationPlugin(accuracy_metrics(experience=True), loggers=[])
    strategy = Naive(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.5),
        train_mb_size=32,
        train_epochs=3,
        eval_mb_size=512,
        evaluator=evaluator,
    )
    benchmark = to_avalanche(digits)
    strategy.train(benchmark.train_stream[0])
    results = strategy.eval(benchmark.test_stream[:1])
    assert results["Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp000"] > 0.9  # 0 versus 1


def test_avalanche_lwf_runs_over_several_exported_experiences(digits):
    # LwF reads each experience's `task_set` after training on it: exported datasets are task-aware.
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    strategy = LwF(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        criterion=torch.nn.CrossEntropyLoss(),
        alpha=1.0,
        temperature=2.0,
        train_mb_size=64,
        train_epochs=1,
        evaluator=EvaluationPlugin(loggers=[]),
    )
    benchmark = to_avalanche(digits)
    for experience in benchmark.train_stream[:2]:
        strategy.train(experience)
    # After each experience LwF keeps the model and the classes it knows, from the experience's task
    # labels and targets; the next experience's loss distils them. Both pairs of digits are now kept.
    lwf = next(p.lwf for p in strategy.plugins if hasattr(p, "lwf"))
    assert lwf.expcount == 2
    assert {task: set(classes) for task, classes in lwf.prev_classes_by_task.items()} == {0: {0, 1, 2, 3}}
    kept, trained = lwf.prev_model.state_dict(), model.state_dict()
    assert lwf.prev_model is not model and all(torch.equal(kept[k], trained[k]) for k in trained)


def test_wrong_inputs_say_what_was_given_and_what_is_accepted(digits):
    with pytest.raises(TypeError, match=r"needs an Avalanche benchmark.*got DigitsStream"):
        AvalancheStream(digits)
    with pytest.raises(TypeError, match=r"needs a perennial Stream.*got CLScenario"):
        to_avalanche(to_avalanche(tiny_stream()))
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'test', 'both'\); got 'valid'"):
        AvalancheStream(to_avalanche(tiny_stream()), split="valid")
    with pytest.raises(ValueError, match="holdout_fraction must be in"):
        to_avalanche(digits, holdout_fraction=1.0)
