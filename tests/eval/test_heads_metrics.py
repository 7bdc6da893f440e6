"""Evaluation pieces against hand computations: metrics, kNN, LLRD groups, probe head, aggregation."""

from __future__ import annotations

import math

import pytest
import torch

from miram.eval.aggregate import aggregate_by_patient, aggregate_seeds, mean_sd
from miram.eval.finetune import layer_id, llrd_param_groups, mixup
from miram.eval.knn import knn_probs
from miram.eval.metrics import (
    authors_multilabel_metrics,
    classification_metrics,
    evaluate_authors_multilabel,
    per_class_metrics,
)
from miram.eval.probe import probe_head
from miram.models.vit import ViTConfig, ViTEncoder

TINY = ViTConfig(img_size=(64, 32), patch_size=8, embed_dim=32, depth=2, num_heads=2)


def test_binary_metrics_match_hand_values() -> None:
    probs = torch.tensor([0.9, 0.8, 0.3, 0.6, 0.2, 0.1])
    target = torch.tensor([1, 1, 1, 0, 0, 0])
    m = classification_metrics(probs, target, "binary")
    # AUROC = fraction of (pos, neg) pairs ranked correctly: 8 of 9 (0.3 < 0.6 is the miss)
    assert m["auroc"] == pytest.approx(8 / 9)
    # predictions at 0.5: 1 1 0 1 0 0 -> 4 of 6 right; recall 2/3 on both classes
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)
    # AP = mean precision at each positive's rank: ranks 1, 2, 4 -> (1 + 1 + 3/4) / 3
    assert m["ap"] == pytest.approx((1 + 1 + 0.75) / 3)


def test_multiclass_per_class_auroc() -> None:
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1]])
    target = torch.tensor([0, 1, 2, 1])
    per = per_class_metrics(probs, target, "multiclass", 3)
    # class 2 is perfectly separated; class 0: positive 0.8 beats negatives 0.1, 0.1, 0.6 -> 1.0
    assert per["auroc"][2] == pytest.approx(1.0) and per["auroc"][0] == pytest.approx(1.0)
    # class 1: positives 0.8, 0.3 vs negatives 0.1, 0.1 -> 1.0
    assert per["auroc"][1] == pytest.approx(1.0)


def test_knn_matches_hand_computation() -> None:
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    target = torch.tensor([0, 1, 1])
    query = torch.tensor([[1.0, 0.1]])
    probs = knn_probs(train, target, query, "multiclass", 2, k=2, temperature=1.0)
    q = query[0] / query[0].norm()
    s0 = float(q @ torch.tensor([1.0, 0.0]))
    s2 = float(q @ (torch.tensor([1.0, 1.0]) / math.sqrt(2)))
    w0, w2 = math.exp(s0), math.exp(s2)
    assert probs[0, 0] == pytest.approx(w0 / (w0 + w2), rel=1e-5)
    hot = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    ml = knn_probs(train, hot, query, "multilabel", 2, k=1)
    assert ml.tolist() == [[1.0, 0.0]]


def test_llrd_groups_scale_by_depth() -> None:
    enc = ViTEncoder(TINY)
    head = torch.nn.Linear(32, 3)
    groups = llrd_param_groups(enc, head, lr=1.0, weight_decay=0.05, layer_decay=0.5)
    assert layer_id("patch_embed.proj.weight", 2) == 0 and layer_id("blocks.1.mlp.fc1.weight", 2) == 2
    assert layer_id("norm.weight", 2) == 3
    scales = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert scales[id(enc.patch_embed.proj.weight)] == pytest.approx(0.125)
    assert scales[id(enc.blocks[0].attn.qkv.weight)] == pytest.approx(0.25)
    assert scales[id(enc.blocks[1].attn.qkv.weight)] == pytest.approx(0.5)
    assert scales[id(head.weight)] == pytest.approx(1.0)
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert decay[id(head.bias)] == 0.0 and decay[id(enc.cls_token)] == 0.0 and decay[id(head.weight)] == 0.05
    n = sum(len(g["params"]) for g in groups)
    assert n == sum(1 for p in enc.parameters() if p.requires_grad) + 2


def test_probe_head_has_parameter_free_batchnorm() -> None:
    head = probe_head(16, 3)
    bn = head[0]
    assert isinstance(bn, torch.nn.BatchNorm1d) and not bn.affine and bn.eps == 1e-6
    assert head[1].weight.std() < 0.05


def test_mixup_is_a_convex_combination() -> None:
    x, y = torch.randn(4, 1, 8, 8), torch.arange(4)
    mixed, ya, yb, lam = mixup(x, y, alpha=0.4, generator=torch.Generator().manual_seed(0))
    assert 0.0 <= lam <= 1.0 and torch.equal(ya, y)
    perm = [int((y == v).nonzero()) for v in yb]
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x[perm])


def test_aggregation_over_patients_and_seeds() -> None:
    probs = torch.tensor([0.2, 0.6, 0.9])
    target = torch.tensor([0, 0, 1])
    p, t, ids = aggregate_by_patient(probs, target, ["a", "a", "b"], "binary")
    assert ids == ["a", "b"] and p.tolist() == pytest.approx([0.4, 0.9]) and t.tolist() == [0, 1]
    hot = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    _, t2, _ = aggregate_by_patient(hot, hot, ["a", "a"], "multilabel")
    assert t2.tolist() == [[1.0, 1.0]]
    assert mean_sd([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))
    runs = [{"auroc": {"value": v, "lo": v - 0.1, "hi": v + 0.1}} for v in (0.7, 0.8, 0.9)]
    agg = aggregate_seeds(runs)["auroc"]
    assert agg["mean"] == pytest.approx(0.8) and agg["sd"] == pytest.approx(0.1) and agg["n"] == 3
    assert agg["lo"] == pytest.approx(0.7)


def test_finetune_and_probe_heads_per_task() -> None:
    from miram.eval.finetune import LitFinetune
    from miram.eval.probe import LitProbe

    vit = {"img_size": [64, 32], "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}
    images = torch.randn(4, 1, 64, 32)
    ml = LitFinetune(task="multilabel", num_classes=5, vit=vit, pool="mean", drop_path_rate=0.2)
    logits = ml.logits(images)
    assert logits.shape == (4, 5) and ml.encoder.config.drop_path_rate == 0.2
    target = torch.zeros(4, 5)
    target[0, 1] = 1.0
    ml.loss_weights = torch.full((5,), 3.0)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, target, pos_weight=ml.loss_weights
    )
    torch.testing.assert_close(ml.loss(logits, target), expected)
    assert ml.probs(logits).shape == (4, 5)
    probe = LitProbe(task="binary", num_classes=2, vit=vit)
    probe.train()
    assert not probe.encoder.training and not any(p.requires_grad for p in probe.encoder.parameters())
    assert probe.probs(probe.logits(images)).shape == (4,)
    assert probe.logits(torch.randn(4, 32)).shape == (4, 2)  # cached features go straight to the head


def test_authors_margins_scoring_matches_hand_values() -> None:
    # two margins; the last mass has both, which the authors' scoring turns into an all-negative row
    target = torch.tensor([[1, 0], [0, 1], [1, 0], [1, 1]])
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [0.0, 1.0], [1.0, 0.0]])
    out = authors_multilabel_metrics(torch.sigmoid(logits), target)
    # softmax argmax [0, 1, 1, 0] against index [0, 1, 0, combined]
    assert out["accuracy"] == pytest.approx(0.5)
    assert out["balanced_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    # per-class AUCs 0.75 and 1 (plain macro 0.875); TPRs averaged on the union of FPRs give 43/48
    assert out["auroc"] == pytest.approx(43 / 48, abs=1e-6)
    assert out["ap"] == pytest.approx((0.5 + 0.5 * 2 / 3 + 1.0) / 2, abs=1e-6)
    # the multi-hot scoring keeps the last row: label AUROCs 2.5/3 and 2.5/4 (ties count half), macro 35/48
    assert classification_metrics(torch.sigmoid(logits), target, "multilabel", 2)["auroc"] == pytest.approx(
        35 / 48, abs=1e-6
    )


def test_authors_scoring_has_bootstrap_intervals() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.nn.functional.one_hot(torch.arange(40) % 4, 4)
    target[::5, 0] = 1
    probs = torch.rand(40, 4, generator=g)
    out = evaluate_authors_multilabel(probs, target, num_resamples=50)
    assert all(0.0 <= e["lo"] <= e["hi"] <= 1.0 for e in out.values())
