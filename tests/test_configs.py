"""``configs/paper/cpu/X.yaml`` is an override of ``configs/paper/X.yaml``: the two composed
(``--config paper/X.yaml --config paper/cpu/X.yaml``) resolve, through the real command-line parsers, to the
CPU settings, with the GPU-only values (4 devices, DDP, sync BN, bf16) gone; and each override holds only
what differs from its base."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from miram.eval.cli import finetune, probe
from miram.train.cli import pretrain

PAPER = Path(__file__).resolve().parents[1] / "configs" / "paper"

CPU_TRAINER = {
    "accelerator": "cpu",
    "devices": 1,
    "strategy": "auto",
    "precision": "32-true",
    "max_epochs": 8,
    "sync_batchnorm": False,
}
MICRO = {"img_size": [64, 64], "patch_size": 8, "embed_dim": 64, "depth": 4, "num_heads": 4}
SDPA: dict[str, Any] = {"name": "sdpa", "options": {}}
MAE_CLASS = "miram.train.lit_pretrain.LitMaskedAutoencoder"


def _scale(factor: int, loss_region: str) -> dict[str, Any]:
    return {"factor": factor, "depth": 2, "embed_dim": 64, "num_heads": 4, "loss_region": loss_region}


def _mae_like(image_size: int, scales: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "seed_everything": 0,
        "trainer": CPU_TRAINER,
        "model": {
            "class_path": MAE_CLASS,
            "init_args": {
                "model": {"encoder": MICRO, "scales": scales, "mask_ratio": 0.75, "hr_target": "native"},
                "optim": {"base_lr": 1.0e-2, "weight_decay": 0.05, "warmup_epochs": 1.0, "min_lr": 0.0},
            },
        },
        "data": {"image_size": [image_size, image_size], "batch_size": 32, "num_workers": 2},
    }


_MIRAM = _mae_like(128, [_scale(1, "masked"), _scale(2, "all")])
# expected values of the composition, and the exact attention spec of every decoder scale
PRETRAIN: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {
    "mae": (_mae_like(64, [_scale(1, "masked")]), [SDPA]),
    "miram_sdpa": (_MIRAM, [SDPA, SDPA]),
    "miram_nystrom": (_MIRAM, [SDPA, {"name": "nystrom", "options": {"num_landmarks": 32}}]),
    "miram_linformer": (_MIRAM, [SDPA, {"name": "linformer", "options": {"proj_len": 64}}]),
    "miram_performer": (
        {
            **_MIRAM,
            "trainer": {
                **CPU_TRAINER,
                "callbacks": [
                    {
                        "class_path": "miram.train.callbacks_attention.FeatureRedraw",
                        "init_args": {"interval": 50},
                    }
                ],
            },
        },
        [SDPA, {"name": "performer", "options": {"num_features": 32}}],
    ),
    "mocov3": (
        {
            "seed_everything": 0,
            "trainer": CPU_TRAINER,
            "model": {
                "class_path": "miram.train.lit_mocov3.LitMoCoV3",
                "init_args": {
                    "model": {
                        "encoder": MICRO,
                        "proj_hidden_dim": 256,
                        "pred_hidden_dim": 256,
                        "out_dim": 64,
                    },
                    "optim": {
                        "base_lr": 1.5e-3,
                        "weight_decay": 0.1,
                        "betas": [0.9, 0.999],
                        "warmup_epochs": 1.0,
                    },
                },
            },
            "data": {"image_size": [64, 64], "batch_size": 64, "num_workers": 2},
        },
        [],
    ),
}

EVAL: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
    "probe": (
        probe,
        {
            "seed_everything": 42,
            "trainer": {
                "accelerator": "cpu",
                "devices": 1,
                "strategy": "auto",
                "precision": None,
                "max_epochs": 50,
            },
            "model": {"pool": "mean", "lr": 1.0e-2, "class_weighted": True},
            "data": {"label": "type_pathology", "batch_size": 256, "num_workers": 2},
            "eval": {"augment": False, "knn_k": 20},
        },
    ),
    "finetune": (
        finetune,
        {
            "seed_everything": 42,
            "trainer": {
                "accelerator": "cpu",
                "devices": 1,
                "strategy": "auto",
                "precision": "32-true",
                "max_epochs": 8,
            },
            "model": {
                "pool": "mean_fc_norm",
                "optimizer": "adamw",
                "lr": 1.0e-3,
                "layer_decay": 0.75,
                "weight_decay": 0.01,
                "drop_path_rate": 0.1,
                "warmup_epochs": 2.0,
            },
            "data": {"batch_size": 64, "num_workers": 2, "scale": [0.8, 1.0], "vflip": True},
        },
    ),
}


def _resolved(command: Callable[..., Any], name: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """The composed config as ``--print_config`` prints it (parsing only: nothing is built or trained)."""
    args = ["--config", str(PAPER / f"{name}.yaml"), "--config", str(PAPER / "cpu" / f"{name}.yaml")]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        command([*args, "--print_config"])
    assert exit_.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def _pick(actual: Any, expected: Any) -> Any:
    """``actual`` cut down to the keys ``expected`` names (lists item by item when the lengths agree)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return {k: _pick(actual[k], v) if k in actual else "<missing>" for k, v in expected.items()}
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [_pick(a, e) for a, e in zip(actual, expected)]
    return actual


@pytest.mark.parametrize("name", list(PRETRAIN))
def test_pretrain_cpu_override_composes_to_the_cpu_settings(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    expected, attention = PRETRAIN[name]
    cfg = _resolved(pretrain, name, capsys)
    assert _pick(cfg, expected) == expected
    model = cfg["model"]["init_args"]["model"]
    # attention options are compared whole: none of the GPU backend's options may survive
    assert [scale["attention"] for scale in model.get("scales", [])] == attention
    assert model["encoder"]["attention"] == SDPA
    if name != "miram_performer":
        assert cfg["trainer"]["callbacks"] is None


@pytest.mark.parametrize("name", list(EVAL))
def test_eval_cpu_override_composes_to_the_cpu_settings(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    command, expected = EVAL[name]
    cfg = _resolved(command, name, capsys)
    assert _pick(cfg, expected) == expected


def _leaves(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flattened ``{dotted.key: value}``; lists are leaves."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        out |= _leaves(value, path + ".") if isinstance(value, dict) else {path: value}
    return out


@pytest.mark.parametrize("name", [*PRETRAIN, *EVAL])
def test_cpu_override_holds_only_what_differs(name: str) -> None:
    base = _leaves(yaml.safe_load((PAPER / f"{name}.yaml").read_text()))
    override = _leaves(yaml.safe_load((PAPER / "cpu" / f"{name}.yaml").read_text()))
    same = {k: v for k, v in override.items() if k in base and base[k] == v}
    assert not same, f"cpu/{name}.yaml repeats values of {name}.yaml"
