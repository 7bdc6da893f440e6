"""The CBIS-DDSM CSV reader on the real files (counts of cbis-ddsm.md §5–6) and on each trap in isolation."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from miram.data.cbis_ddsm.case_csv import CsvError, Lesion, read_case_csv, read_case_csvs, split_descriptor
from miram.data.cbis_ddsm.labels import cross_split_patients, lesion_labels, val_patients

HEADER = (
    "patient_id,breast_density,left or right breast,image view,abnormality id,abnormality type,mass shape,"
    "mass margins,assessment,pathology,subtlety,image file path,cropped image file path,ROI mask file path"
)
PATH = "Mass-Training_P_00001_LEFT_CC/1.2.3.74994/1.2.3.24515/000000.dcm"


@pytest.fixture(scope="module")
def real(request: pytest.FixtureRequest) -> list[Lesion]:
    d = Path(__file__).resolve().parents[3] / "shared" / "data" / "cbis-ddsm"
    if not (d / "mass_case_description_train_set.csv").exists():
        pytest.skip(f"CBIS-DDSM CSVs not found at {d}")
    lesions, problems = read_case_csvs(d)
    assert problems == []
    return lesions


def test_real_csv_counts_match_reference(real: list[Lesion]) -> None:
    files = Counter((les.abnormality_type, les.split) for les in real)
    assert files == {("mass", "train"): 1318, ("mass", "test"): 378, ("calcification", "train"): 1546,
                     ("calcification", "test"): 326}  # fmt: skip
    patho = Counter((les.abnormality_type, les.split, les.pathology) for les in real)
    assert patho[("mass", "train", "MALIGNANT")] == 637 and patho[("mass", "train", "BENIGN")] == 577
    assert patho[("mass", "train", "BENIGN_WITHOUT_CALLBACK")] == 104
    assert patho[("calcification", "train", "BENIGN_WITHOUT_CALLBACK")] == 474
    assert sum(les.malignant for les in real) == 1457
    benign = Counter((les.abnormality_type, les.split) for les in real if not les.malignant)
    assert benign[("mass", "train")] == 681 and benign[("calcification", "test")] == 197
    assert len({les.image_path for les in real}) == 3103
    assert len({les.patient_id for les in real}) == 1566
    assert len(cross_split_patients(real)) == 31 and "P_00016" in cross_split_patients(real)


def test_real_csv_traps(real: list[Lesion]) -> None:
    # literal NA kept as a category (pandas would have made it NaN)
    na = Counter((les.abnormality_type, les.split, field) for les in real
                 for field in ("mass_shape", "mass_margins", "calc_type", "calc_distribution")
                 if getattr(les, field) == ("NA",))  # fmt: skip
    assert na[("mass", "train", "mass_margins")] == 43 and na[("mass", "test", "mass_margins")] == 17
    assert (
        na[("calcification", "train", "calc_distribution")] == 376
        and na[("mass", "train", "mass_shape")] == 4
    )
    # every path cell stripped (the ROI / crop cells end in a newline inside quotes)
    assert not any("\n" in les.roi_path or "\n" in les.crop_path or " " in les.image_path for les in real)
    # both density spellings read; out-of-range 0 -> unknown, row kept
    assert {les.density for les in real if les.patient_id == "P_01743"} == {None}
    assert sorted((les.patient_id, les.view) for les in real if les.density is None) == [
        ("P_01743", "CC"),
        ("P_01743", "MLO"),
    ]
    assert sorted((les.patient_id, les.side, les.view) for les in real if les.subtlety is None) == [
        ("P_00710", "RIGHT", "CC"),
        ("P_00710", "RIGHT", "MLO"),
    ]
    # compounds split + sorted, synonym merged
    assert not any("LUCENT_CENTERED" in les.calc_type for les in real)
    margins = Counter(les.mass_margins for les in real if les.split == "train")
    assert margins[("CIRCUMSCRIBED",)] == 305 and margins[("CIRCUMSCRIBED", "OBSCURED")] == 19
    assert ("PLEOMORPHIC",) in {les.calc_type for les in real}  # PLEOMORPHIC-PLEOMORPHIC collapses


def test_real_labels_and_val_split(real: list[Lesion]) -> None:
    labels = lesion_labels(next(les for les in real if les.pathology == "BENIGN_WITHOUT_CALLBACK"))
    assert labels["pathology"] == 0 and labels["pathology3"] == 1
    val = val_patients(real, 0.2, seed=0)
    train_patients = {les.patient_id for les in real if les.split == "train"}
    assert val <= train_patients and abs(len(val) / len(train_patients) - 0.2) < 0.02
    assert val == val_patients(real, 0.2, seed=0) and val != val_patients(real, 0.2, seed=1)


def _csv(tmp_path: Path, *rows: str, header: str = HEADER) -> Path:
    p = tmp_path / "mass_case_description_train_set.csv"
    p.write_text("\r\n".join([header, *rows]) + "\r\n", newline="")
    return p


def _row(**kw: str) -> str:
    v = {"shape": "OVAL", "margins": "NA", "pathology": "BENIGN", "density": "2", "subtlety": "3"} | kw
    return (f"P_00001,{v['density']},LEFT,CC,1,mass,{v['shape']},{v['margins']},3,{v['pathology']},"
            f'{v["subtlety"]},{PATH},{PATH},"{PATH}\n"')  # fmt: skip


def test_csv_row_traps_parsed(tmp_path: Path) -> None:
    lesions, problems = read_case_csv(_csv(tmp_path, _row(margins="OBSCURED-CIRCUMSCRIBED", density="0")))
    assert problems == []
    (les,) = lesions
    assert les.mass_margins == ("CIRCUMSCRIBED", "OBSCURED") and les.density is None
    assert les.roi_path == PATH and les.source.endswith("mass_case_description_train_set.csv:2")


def test_csv_unknown_values_reported_with_row(tmp_path: Path) -> None:
    path = _csv(
        tmp_path, _row(pathology="MALIGANT"), _row(shape="STAR"), _row(density="7"), _row(subtlety="x")
    )
    lesions, problems = read_case_csv(path)
    assert lesions == [] and len(problems) == 4
    reasons = " | ".join(r for _, r in problems)
    for text in ("unknown pathology 'MALIGANT'", "unknown value 'STAR'", "breast density value 7", "'x'"):
        assert text in reasons
    assert problems[0][0] == f"{path}:2"


def test_csv_missing_column_stops(tmp_path: Path) -> None:
    with pytest.raises(CsvError, match=r"missing column\(s\) \['pathology'\]") as e:
        read_case_csv(_csv(tmp_path, header=HEADER.replace(",pathology", ",pathologie")))
    assert "mass_case_description_train_set.csv" in str(e.value)


def test_split_descriptor_rules() -> None:
    assert split_descriptor("LUCENT_CENTERED-PUNCTATE", ("LUCENT_CENTER", "PUNCTATE")) == (
        "LUCENT_CENTER",
        "PUNCTATE",
    )
    assert split_descriptor("", ("OVAL",)) == ("NA",)
