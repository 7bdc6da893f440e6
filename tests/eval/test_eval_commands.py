"""The evaluation commands end to end on a tiny phantom cache: export -> probe / finetune -> compare,
predict; every run writes summary.json with metrics, intervals and figures."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from PIL import Image

from miram.data.phantom import prepare_phantoms
from miram.models.mocov3 import MoCoV3Config
from miram.models.vit import ViTConfig
from miram.train.lit_mocov3 import LitMoCoV3

TINY = ViTConfig(img_size=(64, 32), patch_size=8, embed_dim=32, depth=2, num_heads=2)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eval")
    prepare_phantoms(out=str(root / "cache"), num=100, size=64)
    lit = LitMoCoV3(model=MoCoV3Config(encoder=TINY, proj_hidden_dim=32, pred_hidden_dim=32, out_dim=16))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.randn(8, 1, 64, 32), torch.zeros(8)), 4
    )
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    trainer.fit(lit, loader)
    trainer.save_checkpoint(root / "moco.ckpt")
    return root


def common(root: Path, name: str, label: str) -> list[str]:
    return [
        "--data.cache",
        str(root / "cache"),
        "--data.label",
        label,
        "--data.num_workers",
        "0",
        "--data.batch_size",
        "16",
        "--trainer.accelerator",
        "cpu",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--out",
        str(root / "runs" / name),
        "--model.num_resamples",
        "20",
    ]


def test_export_round_trip(workdir: Path) -> None:
    from miram.checkpoints import export, load_encoder, load_exported

    path = export(str(workdir / "moco.ckpt"), str(workdir / "encoder"))
    original, _ = load_encoder(workdir / "moco.ckpt")
    loaded, info = load_exported(path)
    assert info["method"] == "mocov3" and tuple(loaded.config.img_size) == (64, 32)
    x = torch.randn(2, 1, 64, 32)
    torch.testing.assert_close(loaded(x), original(x))


def test_probe_finetune_compare_predict(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from miram.cli import main
    from miram.eval.cli import finetune, probe
    from miram.eval.predict import predict

    s = probe(
        [
            *common(workdir, "probe", "pathology"),
            "--run",
            str(workdir / "moco.ckpt"),
            "--trainer.max_epochs",
            "2",
            "--eval.per_patient",
            "true",
        ]
    )
    assert s["kind"] == "probe" and s["method"] == "mocov3" and s["task"] == "binary"
    assert {"metrics", "knn", "per_patient"} <= set(s) and "lo" in s["metrics"]["auroc"]
    run = workdir / "runs" / "probe"
    assert json.loads((run / "summary.json").read_text())["label"] == "pathology"
    assert s["tested_checkpoint"] == str(run / "checkpoints" / "best.ckpt")
    with Image.open(run / "figures" / "roc.png") as im:
        assert im.format == "PNG" and min(im.size) >= 300

    export_path = workdir / "encoder.safetensors"
    if not export_path.exists():
        from miram.checkpoints import export

        export(str(workdir / "moco.ckpt"), str(workdir / "encoder"))
    f = finetune(
        [
            *common(workdir, "finetune", "type_pathology"),
            "--run",
            str(export_path),
            "--trainer.max_epochs",
            "1",
            "--model.mixup_alpha",
            "0.4",
            "--model.pool",
            "cls",
        ]
    )
    assert f["kind"] == "finetune" and f["task"] == "multiclass" and len(f["per_class"]["auroc"]) == 4

    assert main(["compare", "--run", str(workdir / "runs"), "--out", str(workdir / "cmp")]) == 0
    table = (workdir / "cmp" / "compare.md").read_text()
    assert "probe, `phantoms / pathology`" in table and "finetune, `phantoms / type_pathology`" in table
    with Image.open(workdir / "cmp" / "compare.png") as im:
        assert im.format == "PNG" and min(im.size) >= 300

    out = predict(str(run), str(workdir / "cache"), "pathology")
    rows = list(csv.reader(out.open()))
    assert rows[0][:3] == ["key", "patient_id", "target"] and len(rows[0]) == 5
    assert len(rows) - 1 == sum(1 for _ in (workdir / "cache" / "manifest.jsonl").open() if '"test"' in _)


def test_load_encoder_reads_exported_files(workdir: Path) -> None:
    from miram.checkpoints import export, load_encoder

    path = export(str(workdir / "moco.ckpt"), str(workdir / "again"))
    encoder, meta = load_encoder(path)
    assert meta["method"] == "mocov3" and encoder.config.embed_dim == 32


def test_multilabel_runs_also_carry_the_authors_scoring(workdir: Path) -> None:
    from miram.eval.cli import probe
    from miram.eval.compare import compare

    s = probe([*common(workdir, "probe_margins", "margins"), "--trainer.max_epochs", "1"])
    assert s["task"] == "multilabel" and set(s["authors_scoring"]) == set(s["metrics"])
    assert s["authors_scoring"]["auroc"]["value"] != s["metrics"]["auroc"]["value"]
    table = compare([str(workdir / "runs" / "probe_margins")], authors_scoring=True)
    assert "probe (authors' scoring), `phantoms / margins`" in table
    with pytest.raises(SystemExit, match="authors_scoring"):
        compare([str(workdir / "runs" / "probe")], authors_scoring=True)


def test_probe_of_a_scratch_encoder_takes_its_input_size_from_model_vit(workdir: Path) -> None:
    from miram.eval.cli import probe

    vit = {"img_size": [64, 32], "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}
    args = [*common(workdir, "scratch", "pathology"), "--model.vit", json.dumps(vit)]
    # the encoder refuses any other input size, so finishing means data.image_size was linked to (64, 32)
    s = probe([*args, "--trainer.max_epochs", "1"])
    assert s["method"] == "scratch" and s["encoder"] == "scratch" and 0 <= s["metrics"]["auroc"]["value"] <= 1
    config = yaml.safe_load((workdir / "runs" / "scratch" / "config.yaml").read_text())
    assert config["run"] is None and config["model"]["vit"]["img_size"] == [64, 32]
