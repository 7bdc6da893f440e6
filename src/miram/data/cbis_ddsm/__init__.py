"""CBIS-DDSM → a cache (``miram prepare cbis-ddsm``).

Modules, in the order a run uses them: :mod:`~miram.data.cbis_ddsm.case_csv` (the four case-description
CSVs), :mod:`~miram.data.cbis_ddsm.layout` (CSV paths → files in any download layout),
:mod:`~miram.data.cbis_ddsm.labels` (label schema and patient-grouped splits),
:mod:`~miram.data.cbis_ddsm.job` (one full mammogram decoded and cut in a worker) and
:mod:`~miram.data.cbis_ddsm.prepare` (the command that ties them together).
"""

from __future__ import annotations

from miram.data.cbis_ddsm.prepare import prepare_cbis_ddsm

__all__ = ["prepare_cbis_ddsm"]
