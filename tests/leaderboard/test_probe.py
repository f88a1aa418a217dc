"""The linear probe against CLIP_benchmark's protocol, its definitions written out here.

The reference functions below restate ``clip_benchmark/metrics/linear_probe.py`` (``cosine_lr``,
``train``, ``find_peak``, the sweep of ``evaluate``) and ``zeroshot_classification.accuracy``
on the CPU without autocast; balanced accuracy is scikit-learn's, as CLIP_benchmark uses it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score
from torch.utils.data import DataLoader, Dataset

from matbench.leaderboard.probe import (
    WEIGHT_DECAYS,
    cosine_lr,
    fit_probe,
    linear_probe,
    sweep_weight_decay,
)
from matbench.utils.threads import one_cpu_thread


# -- CLIP_benchmark's definitions, written out ------------------------------------------------------
def ref_cosine_lr(optimizer, base_lr, warmup_length, steps):
    def adjust(step):
        for group in optimizer.param_groups:
            if step < warmup_length:
                lr = base_lr * (step + 1) / warmup_length
            else:
                e, es = step - warmup_length, steps - warmup_length
                lr = 0.5 * (1 + np.cos(np.pi * e / es)) * base_lr
            group["lr"] = lr

    return adjust


class RefFeatureDataset(Dataset):
    def __init__(self, features, targets):
        self.features, self.targets = features, targets

    def __len__(self):
        return len(self.features)

    def __getitem__(self, i):
        return self.features[i], self.targets[i]


def ref_train(loader, input_shape, output_shape, weight_decay, lr, epochs, seed):
    torch.manual_seed(seed)
    model = torch.nn.Linear(input_shape, output_shape)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    criterion = torch.nn.CrossEntropyLoss()
    scheduler = ref_cosine_lr(optimizer, lr, 0.0, epochs * len(loader))
    for epoch in range(epochs):
        for i, (x, y) in enumerate(loader):
            scheduler(i + epoch * len(loader))
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
    return model


def ref_infer(model, loader):
    true, pred = [], []
    with torch.no_grad():
        for x, y in loader:
            pred.append(model(x))
            true.append(y)
    return torch.cat(pred), torch.cat(true)


def ref_accuracy(output, target, topk=(1,)):
    pred = output.topk(max(topk), 1, True, True)[1].t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    n = len(target)
    # (CLIP_benchmark: float(...sum(0, keepdim=True).cpu().numpy()), a 1-element array)
    return [float(correct[:k].reshape(-1).float().sum()) / n for k in topk]


def ref_find_peak(wd_list, idxs, score):
    best_wd_idx, max_acc = 0, 0
    for idx in idxs:
        acc1 = score(idx)
        if max_acc < acc1:
            best_wd_idx, max_acc = idx, acc1
    return best_wd_idx


def ref_sweep(score):
    wd_list = np.logspace(-6, 2, num=97).tolist()
    wd_list_init = np.logspace(-6, 2, num=7).tolist()
    wd_init_idx = [i for i, val in enumerate(wd_list) if val in wd_list_init]
    peak_idx = ref_find_peak(wd_list, wd_init_idx, score)
    step_span = 8
    while step_span > 0:
        left, right = max(peak_idx - step_span, 0), min(peak_idx + step_span, len(wd_list) - 1)
        peak_idx = ref_find_peak(wd_list, [left, peak_idx, right], score)
        step_span //= 2
    return peak_idx


def ref_evaluate(train, val, test, lr, epochs, batch_size, seed):
    """The sweep, final fit on train + val and the test metrics of CLIP_benchmark's evaluate."""

    def loader(features, targets, shuffle):
        return DataLoader(
            RefFeatureDataset(features, targets), batch_size=batch_size, shuffle=shuffle
        )

    input_shape, output_shape = train[0].shape[1], int(train[1].max()) + 1

    def score(idx):
        model = ref_train(
            loader(*train, True), input_shape, output_shape, WD_LIST[idx], lr, epochs, seed
        )
        logits, target = ref_infer(model, loader(*val, True))
        return ref_accuracy(logits.float(), target.float(), topk=(1,))[0]

    best_wd = WD_LIST[ref_sweep(score)]
    train_val = (torch.cat([train[0], val[0]]), torch.cat([train[1], val[1]]))
    model = ref_train(
        loader(*train_val, True), input_shape, output_shape, best_wd, lr, epochs, seed
    )
    logits, target = ref_infer(model, loader(*test, False))
    pred = logits.argmax(axis=1)
    acc1, acc5 = ref_accuracy(logits.float(), target.float(), topk=(1, 5))
    return {
        "weight_decay": best_wd,
        "acc1": acc1,
        "acc5": acc5,
        "mean_per_class_recall": balanced_accuracy_score(target, pred),
    }


WD_LIST = np.logspace(-6, 2, num=97).tolist()


@pytest.fixture(autouse=True)
def _one_thread():
    """The reference fits on one thread too, as the probe's (tiny layers)."""
    with one_cpu_thread():
        yield


# -- tests ------------------------------------------------------------------------------------------
def test_grid_and_schedule_match_the_reference() -> None:
    assert WEIGHT_DECAYS == WD_LIST
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    for warmup, steps in ((0, 50), (5, 40)):
        adjust = ref_cosine_lr(optimizer, 0.1, warmup, steps)
        for step in range(steps):
            adjust(step)
            assert cosine_lr(0.1, warmup, steps, step) == pytest.approx(
                optimizer.param_groups[0]["lr"], abs=1e-15
            )


@pytest.mark.parametrize("peak", [0, 13, 40, 57, 96])
def test_sweep_visits_the_reference_indices(peak: int) -> None:
    # a validation accuracy peaked at `peak`, with a plateau (ties keep the first index)
    def score(index: int) -> float:
        return round(1.0 - abs(index - peak) / 200, 2)

    ref_visits: list[int] = []

    def ref_score(index: int) -> float:
        ref_visits.append(index)
        return score(index)

    best, visited = sweep_weight_decay(score)
    assert best == ref_sweep(ref_score)
    assert visited == ref_visits


def test_fit_equals_the_reference_train() -> None:
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(150, 12, generator=gen), torch.randint(0, 4, (150,), generator=gen)
    ref = ref_train(
        DataLoader(RefFeatureDataset(x, y), batch_size=64, shuffle=True), 12, 4, 1e-3, 0.1, 3, 7
    )
    ours = fit_probe(x, y, 4, 1e-3, lr=0.1, epochs=3, batch_size=64, seed=7)
    torch.testing.assert_close(ours.weight, ref.weight, rtol=0, atol=0)
    torch.testing.assert_close(ours.bias, ref.bias, rtol=0, atol=0)


def test_linear_probe_equals_the_reference_evaluate() -> None:
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(6, 16, generator=gen)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(n) % 6
        return centres[labels] + 1.5 * torch.randn(n, 16, generator=gen), labels

    train, val, test = split(90), split(30), split(42)
    ref = ref_evaluate(train, val, test, lr=0.1, epochs=2, batch_size=32, seed=0)
    ours = linear_probe(train, val, test, 6, lr=0.1, epochs=2, batch_size=32, seed=0)
    assert ours["weight_decay"] == ref["weight_decay"]
    assert ours["accuracy"] == pytest.approx(ref["acc1"], abs=1e-12)
    assert ours["top5_accuracy"] == pytest.approx(ref["acc5"], abs=1e-12)
    assert ours["mean_class_accuracy"] == pytest.approx(ref["mean_per_class_recall"], abs=1e-12)
    assert 0.3 < ours["accuracy"] < 1.0  # learnable, not trivial
    assert ours["fits"] < 20  # memoised: the reference fits 20 times
