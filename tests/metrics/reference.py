"""Plainly written loop implementations of every metric, independent of matbench.metrics.

They work on Python lists and floats, one sample / pixel / triplet at a time, following the
protocol text (docs and ../shared/docs/formats.md) rather than the vectorised code.
"""

from __future__ import annotations

import math

NAN = float("nan")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else NAN


# -- triplet accuracy -------------------------------------------------------------------------
def triplet(similarity, weight, groups, soft_only=False) -> dict[str, float]:
    """MatSeg triplet accuracy of one image; ties in s count half, top-1 ties as a fraction."""
    s = similarity.tolist()
    w = weight.tolist()
    g = [int(x) for x in groups]
    n = len(s)
    acc: dict[int, float] = {}
    top1: dict[int, float] = {}
    for a in range(n):
        pivot_scores = []
        for b in range(n):
            if b == a:
                continue
            if soft_only and not (0 < w[a][b] < 1):
                continue
            correct = 0.0
            total = 0
            for c in range(n):
                if c == a or c == b or w[a][c] == w[a][b]:
                    continue
                total += 1
                if s[a][b] == s[a][c]:
                    correct += 0.5
                elif (w[a][b] > w[a][c]) == (s[a][b] > s[a][c]):
                    correct += 1.0
            if total > 0:
                pivot_scores.append(correct / total)
        if not pivot_scores:
            continue
        acc[a] = sum(pivot_scores) / len(pivot_scores)
        others = [b for b in range(n) if b != a]
        best_s = max(s[a][b] for b in others)
        best_w = max(w[a][b] for b in others)
        most_similar = [b for b in others if s[a][b] == best_s]
        top1[a] = sum(1 for b in most_similar if w[a][b] == best_w) / len(most_similar)
    if not acc:
        return dict.fromkeys(("by_point", "by_material", "top1_by_point", "top1_by_material"), NAN)

    def by_material(values: dict[int, float]) -> float:
        per_group: dict[int, list[float]] = {}
        for a, v in values.items():
            per_group.setdefault(g[a], []).append(v)
        return _mean([_mean(v) for v in per_group.values()])

    return {
        "by_point": _mean(list(acc.values())),
        "by_material": by_material(acc),
        "top1_by_point": _mean(list(top1.values())),
        "top1_by_material": by_material(top1),
    }


def triplet_benchmark(images, soft_only=False) -> dict[str, float]:
    """Plain mean over images of :func:`triplet`; images = (s, w, groups, has_relations)."""
    scored = []
    skipped = 0
    for s, w, g, has_relations in images:
        if soft_only and not has_relations:
            continue
        r = triplet(s, w, g, soft_only)
        if math.isnan(r["by_point"]):
            skipped += 1
        else:
            scored.append(r)
    keys = ("by_point", "by_material", "top1_by_point", "top1_by_material")
    out = {k: _mean([r[k] for r in scored]) for k in keys}
    out["num_images"] = len(scored)
    out["num_skipped"] = skipped
    return out


# -- retrieval --------------------------------------------------------------------------------
def _unit(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v] if norm > 0 else [0.0 for _ in v]


def _dot(u: list[float], v: list[float]) -> float:
    return sum(x * y for x, y in zip(u, v, strict=True))


def retrieval(image_emb, text_emb, captions, group_size=64) -> dict[str, float]:
    """Ranks among the unique captions of each group; tied candidates in random order."""
    images = [_unit(v) for v in image_emb.tolist()]
    texts = [_unit(v) for v in text_emb.tolist()]
    n = len(captions)
    if n == 0:
        return dict.fromkeys(("mcs", "mrr", "recall@1", "recall@5", "recall@10"), NAN)
    mcs = sum(_dot(images[i], texts[i]) for i in range(n)) / n
    size = n if group_size is None else group_size
    rr_total = 0.0
    hits = {1: 0.0, 5: 0.0, 10: 0.0}
    for lo in range(0, n, size):
        members = list(range(lo, min(n, lo + size)))
        vocabulary: list[str] = []
        embedding: dict[str, list[float]] = {}
        for i in members:
            if captions[i] not in embedding:
                vocabulary.append(captions[i])
                embedding[captions[i]] = texts[i]
        for i in members:
            true = _dot(images[i], embedding[captions[i]])
            higher = 0
            tied = 0
            for caption in vocabulary:
                if caption == captions[i]:
                    continue
                score = _dot(images[i], embedding[caption])
                if score > true:
                    higher += 1
                elif score == true:
                    tied += 1
            positions = range(higher + 1, higher + tied + 2)
            rr_total += sum(1.0 / p for p in positions) / len(positions)
            for k in hits:
                hits[k] += sum(1 for p in positions if p <= k) / len(positions)
    out = {"mcs": mcs, "mrr": rr_total / n}
    out.update({f"recall@{k}": v / n for k, v in hits.items()})
    return out


# -- classification ---------------------------------------------------------------------------
def classification(logits, target, num_classes, top_k=5) -> dict:
    """Counts per sample; ties in the scores go to the lower class index."""
    rows = logits.tolist()
    labels = [int(t) for t in target]
    confusion = [[0] * num_classes for _ in range(num_classes)]
    topk = 0
    for scores, label in zip(rows, labels, strict=True):
        order = sorted(range(num_classes), key=lambda c, s=scores: (-s[c], c))
        confusion[label][order[0]] += 1
        if label in order[:top_k]:
            topk += 1
    total = len(labels)
    per_class = []
    for c in range(num_classes):
        support = sum(confusion[c])
        per_class.append(confusion[c][c] / support if support else NAN)
    present = [v for c, v in enumerate(per_class) if sum(confusion[c])]
    # IoU of class c: TP / (TP + FP + FN), for classes present in the targets
    ious = []
    for c in range(num_classes):
        tp, fn = confusion[c][c], sum(confusion[c]) - confusion[c][c]
        fp = sum(confusion[r][c] for r in range(num_classes)) - tp
        ious.append(tp / (tp + fp + fn) if sum(confusion[c]) else NAN)
    top = {f"top{top_k}_accuracy": topk / total if total else NAN} if top_k <= num_classes else {}
    return {
        "accuracy": sum(confusion[c][c] for c in range(num_classes)) / total if total else NAN,
        **top,
        "mean_class_accuracy": _mean(present),
        "miou": _mean([v for c, v in enumerate(ious) if sum(confusion[c])]),
        "per_class_accuracy": per_class,
        "per_class_iou": ious,
        "confusion_matrix": confusion,
    }


# -- segmentation -----------------------------------------------------------------------------
def segmentation(pred_batches, target_batches, num_classes, ignore_index=255) -> dict:
    """One confusion matrix over every non-ignored pixel of every batch; DMS means."""
    c = num_classes
    confusion = [[0] * c for _ in range(c)]
    for preds, target in zip(pred_batches, target_batches, strict=True):
        for p_img, t_img in zip(preds.tolist(), target.tolist(), strict=True):
            for p_row, t_row in zip(p_img, t_img, strict=True):
                for p, t in zip(p_row, t_row, strict=True):
                    if ignore_index is not None and t == ignore_index:
                        continue
                    confusion[t][p] += 1
    total = sum(map(sum, confusion))
    accs, ious = [], []
    for k in range(c):
        gt = sum(confusion[k])
        predicted = sum(confusion[r][k] for r in range(c))
        tp = confusion[k][k]
        accs.append(tp / gt if gt else NAN)
        ious.append(tp / (gt + predicted - tp) if gt else NAN)
    present = [k for k in range(c) if sum(confusion[k])]
    return {
        "pixel_accuracy": sum(confusion[k][k] for k in range(c)) / total if total else NAN,
        "mean_class_accuracy": _mean([accs[k] for k in present]),
        "miou": _mean([ious[k] for k in present]),
        "per_class_iou": ious,
        "per_class_accuracy": accs,
        "confusion_matrix": confusion,
        "dms_script": dms_evaluation_script(confusion),
    }


def dms_evaluation_script(confusion) -> dict:
    """The closing formulas of the DMS release's ``evaluation.py`` (apple/ml-dms-dataset),
    written out with numpy as it does: note the 1e-9 guards and absent classes as 0."""
    import numpy as np

    cm = np.asarray(confusion, dtype=np.float64)
    pixel_acc = np.diag(cm).sum() / (cm.sum() + 1e-9)
    per_class_acc = np.diag(cm) / (cm.sum(axis=1) + 1e-9)
    macc = per_class_acc.sum() / ((np.sum(cm, axis=1) > 0).sum() + 1e-9)
    per_class_iou = np.diag(cm) / (np.sum(cm, axis=1) + np.sum(cm, axis=0) - np.diag(cm) + 1e-9)
    miou = per_class_iou.sum() / ((np.sum(cm, axis=1) > 0).sum() + 1e-9)
    return {
        "pixel_accuracy": pixel_acc,
        "mean_class_accuracy": macc,
        "miou": miou,
        "per_class_accuracy": per_class_acc.tolist(),
        "per_class_iou": per_class_iou.tolist(),
    }


def assert_close(actual, expected, tol: float = 1e-9, path: str = "result") -> None:
    """Recursive comparison of dicts/lists/numbers; NaN equals NaN."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: expected a dict, got {type(actual)}"
        assert set(actual) == set(expected), f"{path}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            assert_close(actual[key], expected[key], tol, f"{path}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), f"{path}: length {len(actual)} != {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_close(a, e, tol, f"{path}[{i}]")
    else:
        a, e = float(actual), float(expected)
        if math.isnan(e):
            assert math.isnan(a), f"{path}: expected NaN, got {a}"
        else:
            assert abs(a - e) <= tol, f"{path}: {a} != {e} (tolerance {tol})"
