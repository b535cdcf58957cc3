"""Reading tabular datasets: CSV/TSV (delimiter and encoding sniffed, `.gz` too), Parquet, JSON lines.

Every failure is an `InvalidInputError` that names the file, what is wrong and how to fix it.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import pandas as pd

from ml_expert.memory.errors import InvalidInputError

SNIFF_BYTES = 64 * 1024
TEXT_SUFFIXES = {".csv", ".tsv", ".txt", ".tab"}
JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
SUPPORTED = "CSV/TSV (.csv, .tsv, .txt, optionally .gz), Parquet (.parquet) or JSON lines (.jsonl, .ndjson)"


def _suffixes(path: Path) -> tuple[str, bool]:
    """The data suffix and whether the file is gzip-compressed."""
    sfx = [s.lower() for s in path.suffixes]
    if sfx and sfx[-1] == ".gz":
        return (sfx[-2] if len(sfx) > 1 else ""), True
    return (sfx[-1] if sfx else ""), False


def _head(path: Path, gz: bool) -> bytes:
    try:
        if gz:
            with gzip.open(path, "rb") as f:
                return f.read(SNIFF_BYTES)
        with open(path, "rb") as f:
            return f.read(SNIFF_BYTES)
    except (OSError, EOFError) as exc:
        raise InvalidInputError(f"Cannot read {path.name}: {exc}. Is it a valid {'gzip ' if gz else ''}file?") from exc


def sniff_encoding(head: bytes) -> str:
    """utf-8 (with or without BOM) when it decodes, else latin-1 (which accepts any byte)."""
    if head.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    try:
        head.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        # a multi-byte character cut at the end of the sample is still utf-8
        if exc.start >= len(head) - 3:
            return "utf-8"
        return "latin-1"


def sniff_delimiter(text: str, suffix: str) -> str:
    if suffix in {".tsv", ".tab"}:
        return "\t"
    lines = [line for line in text.splitlines()[:50] if line.strip()]
    try:
        return csv.Sniffer().sniff("\n".join(lines), delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _looks_binary(head: bytes) -> bool:
    if b"\x00" in head:
        return True
    sample = head[:4096]
    control = sum(1 for b in sample if b < 9 or 13 < b < 32)
    return bool(sample) and control / len(sample) > 0.05


def read_table(path: Path, *, max_rows: int | None = None) -> pd.DataFrame:
    """Read a dataset file into a DataFrame with clear errors for anything unreadable."""
    suffix, gz = _suffixes(path)
    if path.is_dir():
        raise InvalidInputError(f"{path.name} is a folder; pass a data file ({SUPPORTED}).")
    if path.stat().st_size == 0:
        raise InvalidInputError(f"{path.name} is empty (0 bytes). Pass a file with a header row and data rows.")
    if suffix in PARQUET_SUFFIXES:
        try:
            df = pd.read_parquet(path)
        except Exception as exc:
            raise InvalidInputError(f"{path.name} is not a readable Parquet file ({exc}).") from exc
        return _check_rows(df.head(max_rows) if max_rows else df, path)
    if suffix not in TEXT_SUFFIXES | JSONL_SUFFIXES:
        raise InvalidInputError(
            f"Unsupported file type {''.join(path.suffixes) or '(none)'!r} for {path.name}. Use {SUPPORTED}."
        )
    head = _head(path, gz)
    if _looks_binary(head):
        raise InvalidInputError(
            f"{path.name} looks binary (NUL or control bytes), not {SUPPORTED}. Export it as CSV or Parquet."
        )
    encoding = sniff_encoding(head)
    if suffix in JSONL_SUFFIXES:
        try:
            df = pd.read_json(path, lines=True, encoding=encoding, nrows=max_rows, compression="gzip" if gz else None)
        except ValueError as exc:
            raise InvalidInputError(f"{path.name} is not valid JSON lines (one object per line): {exc}.") from exc
        return _check_rows(df, path)
    text = head.decode(encoding, errors="replace")
    if not text.strip():
        raise InvalidInputError(f"{path.name} holds only blank lines. Pass a file with a header row and data rows.")
    delimiter = sniff_delimiter(text, suffix)
    return _check_rows(_read_csv(path, delimiter, encoding, gz, max_rows), path)


def _read_csv(path: Path, delimiter: str, encoding: str, gz: bool, max_rows: int | None) -> pd.DataFrame:
    compression = "gzip" if gz else None
    if max_rows is None and encoding in ("utf-8", "utf-8-sig"):
        try:  # the fast multi-threaded reader; it refuses ragged rows, which the C parser then pinpoints
            return pd.read_csv(path, sep=delimiter, engine="pyarrow", compression=compression)
        except Exception:
            pass
    try:
        return pd.read_csv(
            path, sep=delimiter, encoding=encoding, compression=compression, nrows=max_rows, low_memory=False
        )
    except pd.errors.EmptyDataError as exc:
        raise InvalidInputError(f"{path.name} has no columns to read ({exc}). Pass a CSV with a header row.") from exc
    except pd.errors.ParserError as exc:
        raise InvalidInputError(
            f"{path.name} has rows with a different number of fields than the header ({exc}). "
            "Fix or remove those rows, or quote fields that contain the delimiter "
            f"{delimiter!r}."
        ) from exc
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{path.name} is not valid {encoding} text ({exc}). Re-save it as UTF-8.") from exc


def _check_rows(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    if df.shape[1] == 0:
        raise InvalidInputError(f"{path.name} has no columns. Pass a file with a header row and data rows.")
    if len(df) == 0:
        raise InvalidInputError(
            f"{path.name} has a header ({list(df.columns)[:10]}) but no data rows. Add rows or pick another file."
        )
    df.columns = [str(c).strip() for c in df.columns]
    dupes = sorted({c for c in df.columns if list(df.columns).count(c) > 1})
    if dupes:
        raise InvalidInputError(f"{path.name} has duplicate column names {dupes}. Rename them so each is unique.")
    return df
