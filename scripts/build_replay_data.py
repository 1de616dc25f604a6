"""Build ``langchain_herd/datasets/mmlu_pro_replay.parquet``, the answers ``herd demo --replay``
serves, from the shared MMLU-Pro tables (TIGER-AI-Lab/MMLU-Pro eval_results, Apache-2.0).

Keeps the MMLU-origin questions (``source`` starting ``ori_mmlu-``): ``id``, ``subject``,
``group``, ``category``, ``prompt``, ``answer`` and, per model, the letter it chose (null
where none could be extracted from its output). Each model's ``active_params_b`` and
``open_weights`` (from ``models.json``) and the provenance go into the file's schema metadata
(key ``langchain_herd.replay``), so the table is one file. Only the MMLU-Pro tables are read:
the RouterDC table has no licence and is never copied.

Run from the repository root (the shared data folder sits beside it)::

    .venv/bin/python scripts/build_replay_data.py [--data ../shared/data/correctness]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from langchain_herd.replay import BUNDLED_REPLAY_PATH, METADATA_KEY

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "correctness"
ORIGIN = "ori_mmlu-"
QUESTION_COLUMNS = ["id", "subject", "group", "category", "prompt", "answer"]


def build(data: Path, out: Path) -> pa.Table:
    """Read the shared tables, keep the MMLU-origin rows, and write the replay table."""
    questions = pd.read_parquet(data / "mmlu_pro.parquet")
    letters = pd.read_parquet(data / "mmlu_pro_predictions.parquet")
    if not questions["id"].equals(letters["id"]):
        raise SystemExit("mmlu_pro.parquet and mmlu_pro_predictions.parquet rows differ")
    keep = questions["source"].str.startswith(ORIGIN).to_numpy()
    models = [c for c in letters.columns if c != "id"]
    costs = json.loads((data / "models.json").read_text())["mmlu_pro.parquet"]
    missing = [m for m in models if m not in costs]
    if missing:
        raise SystemExit(f"models.json has no entry for {missing}")
    frame = questions.loc[keep, QUESTION_COLUMNS].reset_index(drop=True)
    chosen = letters.loc[keep, models].reset_index(drop=True)
    columns: dict[str, pa.Array] = {
        name: pa.array(frame[name].astype(str).tolist(), pa.string()) for name in QUESTION_COLUMNS
    }
    for model in models:
        values = [None if pd.isna(v) else str(v) for v in chosen[model].tolist()]
        columns[model] = pa.array(values, pa.string())
    metadata = {
        "source": "TIGER-AI-Lab/MMLU-Pro eval_results (5-shot chain-of-thought runs)",
        "licence": "Apache-2.0",
        "rows": f"the {len(frame)} MMLU-Pro questions whose source starts with {ORIGIN!r}",
        "letters": "per model, the option it chose; null where no letter was extracted",
        "models": {m: costs[m] for m in models},
    }
    table = pa.table(columns).replace_schema_metadata(
        {METADATA_KEY: json.dumps(metadata, sort_keys=True)}
    )
    # zstd and dictionaries: the prompts are most of the bytes; the letter columns cost ~nothing.
    pq.write_table(table, out, compression="zstd", compression_level=19, use_dictionary=True)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared correctness folder")
    parser.add_argument("--out", type=Path, default=BUNDLED_REPLAY_PATH)
    args = parser.parse_args()
    table = build(args.data, args.out)
    size = args.out.stat().st_size
    print(f"wrote {args.out}: {table.num_rows} rows, {table.num_columns} columns, {size:,} bytes")


if __name__ == "__main__":
    main()
