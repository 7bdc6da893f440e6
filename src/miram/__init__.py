"""miram: multi-scale masked autoencoders with hybrid attention for mammography.

Implements MIRAM (Vo et al., arXiv 2503.07157), with MAE (He et al., arXiv 2111.06377) as its one-scale
case and MoCo-v3 (Chen et al., arXiv 2104.02057) as a contrastive baseline.
"""

from __future__ import annotations

__version__ = "0.1.0"
