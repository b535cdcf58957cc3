"""Reading tabular datasets: CSV/TSV (delimiter and encoding sniffed, `.gz` too), Parquet, JSON lines, Excel.

Every failure is an `InvalidInputError` that names the file, what is wrong and how to fix it.
"""

from __future__ import annotations

import csv
import gzip
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

from ml_expert.memory.errors import InvalidInputError
from ml_expert.tools.core.lazy import lazy_import

np = lazy_import("numpy")  # loads with the first data tool call, not at server start
pd = lazy_import("pandas")  # loads with the first data tool call, not at server start

SNIFF_BYTES = 64 * 1024
MAX_COLUMNS = 100_000
HEADER_CHARS = 64 * 1024 * 1024  # a header line longer than this is far past MAX_COLUMNS anyway
TEXT_SUFFIXES = {".csv", ".tsv", ".txt", ".tab"}
JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
EXCEL_SUFFIXES = {".xlsx", ".xlsm"}  # the first sheet
SUPPORTED = (
    "CSV/TSV (.csv, .tsv, .txt, optionally .gz), Parquet (.parquet), JSON lines (.jsonl, .ndjson) or Excel (.xlsx, "
    ".xlsm: the first sheet)"
)


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


def check_size(path: Path, max_bytes: int) -> None:
    """Refuse a dataset file (or image folder) larger than the server's limit before anything reads it."""
    size = path.stat().st_size if path.is_file() else 0
    if size > max_bytes:
        raise InvalidInputError(
            f"{path.name} is {size / 1e9:.2f} GB; this server reads files up to {max_bytes / 1e9:.2f} GB "
            "(ML_EXPERT_MAX_FILE_BYTES). Sample the rows, or raise the limit when the machine has the memory."
        )


def _check_header(path: Path, gz: bool, encoding: str, delimiter: str) -> None:
    """Refuse more than MAX_COLUMNS columns before parsing (the header line alone is read)."""
    opener = gzip.open if gz else open
    with opener(path, "rt", encoding=encoding, errors="replace", newline="") as f:  # type: ignore[operator]
        header = f.readline(HEADER_CHARS)
    fields = header.count(delimiter) + 1
    if fields > MAX_COLUMNS:
        raise InvalidInputError(
            f"{path.name} has about {fields:,} columns; at most {MAX_COLUMNS:,} are supported. Select the columns "
            "you need (or reduce them, e.g. with a feature selection) before analysis."
        )
    if header.endswith(("\n", "\r")):  # the whole header line: names a CSV reader would rename (x, x.1) are refused
        _refuse_repeated_names(path, next(csv.reader([header.rstrip("\r\n")], delimiter=delimiter), []))


def _refuse_repeated_names(path: Path, header: list[Any]) -> None:
    """A header's names that a reader would rename (x, x.1) are refused; blank ones become "Unnamed: 3", …"""
    names = [str(name).strip() for name in header if name is not None and name == name]
    dupes = sorted(name for name, n in Counter(names).items() if n > 1 and name)
    if dupes:
        raise InvalidInputError(f"{path.name} has duplicate column names {dupes[:20]}. Rename them so each is unique.")


def read_table(path: Path, target: str | None = None) -> pd.DataFrame:
    """Read a dataset file into a DataFrame with clear errors for anything unreadable.

    Infinite numbers become missing values; `df.attrs["infinite"]` counts them per column. A `target` of codes
    written with leading zeros ("01", "02") keeps its text (see `_codes_as_written`)."""
    suffix, gz = _suffixes(path)
    if path.is_dir():
        raise InvalidInputError(f"{path.name} is a folder; pass a data file ({SUPPORTED}).")
    if path.stat().st_size == 0:
        raise InvalidInputError(f"{path.name} is empty (0 bytes). Pass a file with a header row and data rows.")
    if suffix in PARQUET_SUFFIXES:
        try:
            import pyarrow.parquet as pq

            columns = len(pq.read_schema(path).names)
            if columns > MAX_COLUMNS:
                raise InvalidInputError(f"{path.name} has {columns:,} columns; at most {MAX_COLUMNS:,} are supported.")
            _release_arrow_memory()
            df = pd.read_parquet(path)
        except InvalidInputError:
            raise
        except Exception as exc:
            raise InvalidInputError(f"{path.name} is not a readable Parquet file ({exc}).") from exc
        return _check_rows(df, path)
    if suffix in EXCEL_SUFFIXES and not gz:
        return _check_rows(_read_excel(path), path)
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
            df = pd.read_json(path, lines=True, encoding=encoding, compression="gzip" if gz else None)
        except ValueError as exc:
            raise InvalidInputError(f"{path.name} is not valid JSON lines (one object per line): {exc}.") from exc
        from ml_expert.tools.core.portable.preprocessing import csv_like_cells

        return _check_rows(csv_like_cells(df), path)
    text = head.decode(encoding, errors="replace")
    if not text.strip():
        raise InvalidInputError(f"{path.name} holds only blank lines. Pass a file with a header row and data rows.")
    delimiter = sniff_delimiter(text, suffix)
    _check_header(path, gz, encoding, delimiter)
    df = _check_rows(_read_csv(path, delimiter, encoding, gz), path)
    if target is not None and target in df.columns and pd.api.types.is_numeric_dtype(df[target].dtype):
        _codes_as_written(df, target, path, delimiter, encoding, gz)
    return df


CODE_SAMPLE = 100_000  # rows of a numeric-looking target whose text is checked for leading zeros


def _codes_as_written(df: pd.DataFrame, target: str, path: Path, delimiter: str, encoding: str, gz: bool) -> None:
    """A target the CSV reader took for numbers but written as codes with leading zeros ("01", "02": classes, not
    the numbers 1 and 2) gets its text back, so that its labels, and the predictions, keep the zeros."""
    compression = "gzip" if gz else None
    read = partial(pd.read_csv, path, sep=delimiter, encoding=encoding, compression=compression, dtype=str)
    column = [str(c).strip() for c in pd.read_csv(path, sep=delimiter, encoding=encoding, compression=compression,
                                                 nrows=0).columns].index(target)  # fmt: skip
    head = read(usecols=[column], nrows=CODE_SAMPLE).iloc[:, 0].dropna().str.strip()
    if head.empty or not head.str.fullmatch(r"\d+").all() or not head.str.match(r"0\d").any():
        return
    text = read(usecols=[column]).iloc[:, 0].str.strip()
    if len(text) == len(df) and text.dropna().str.fullmatch(r"\d+").all():
        df[target] = text.to_numpy(dtype=object)


_POOL_SET = False


def _release_arrow_memory() -> None:
    """Make pyarrow hand freed memory back to the system at once (jemalloc, decay 0).

    Its default pool keeps what a read freed: a 2 GB CSV left ~3 GB resident after the frame was built. Set once,
    before the first Arrow read; where this pyarrow has no jemalloc the default pool stays."""
    global _POOL_SET
    if _POOL_SET:
        return
    _POOL_SET = True
    try:
        import pyarrow as pa

        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(0)
    except (ImportError, NotImplementedError, AttributeError):
        pass


def _not_a_workbook(path: Path, why: str) -> InvalidInputError:
    return InvalidInputError(
        f"{path.name} is not a readable Excel workbook ({why}). Save it again as .xlsx from Excel, or export the "
        "sheet as CSV."
    )


def check_workbook(path: Path) -> None:
    """Refuse a file named .xlsx that is not one (an .xlsx is a zip archive), before anything reads it."""
    import zipfile

    if not zipfile.is_zipfile(path):
        raise _not_a_workbook(path, "it is not a zip archive, as every .xlsx is; an old .xls, or a renamed CSV?")


def _read_excel(path: Path) -> pd.DataFrame:
    """A workbook's first sheet, with a clear error for a file that is not one."""
    from ml_expert.tools.core.portable.preprocessing import read_sheet

    check_workbook(path)
    try:
        header = pd.read_excel(path, sheet_name=0, header=None, nrows=1, engine="openpyxl")
        _refuse_repeated_names(path, header.iloc[0].tolist() if len(header) else [])
        return read_sheet(path)
    except InvalidInputError:
        raise
    except Exception as exc:  # openpyxl's InvalidFileException, a sheet pandas cannot parse
        raise _not_a_workbook(path, f"{type(exc).__name__}: {exc}") from exc


def _read_csv(path: Path, delimiter: str, encoding: str, gz: bool) -> pd.DataFrame:
    compression = "gzip" if gz else None
    if encoding in ("utf-8", "utf-8-sig"):
        _release_arrow_memory()
        try:  # the fast multi-threaded reader; it refuses ragged rows, which the C parser then pinpoints
            return pd.read_csv(path, sep=delimiter, engine="pyarrow", compression=compression)
        except Exception:
            pass
    try:
        return pd.read_csv(path, sep=delimiter, encoding=encoding, compression=compression, low_memory=False)
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
    dupes = sorted(name for name, n in Counter(df.columns).items() if n > 1)  # linear in the number of columns
    if dupes:
        raise InvalidInputError(f"{path.name} has duplicate column names {dupes[:20]}. Rename them so each is unique.")
    return _infinite_as_missing(_numbers_from_text(df))


def _numbers_from_text(df: pd.DataFrame) -> pd.DataFrame:
    """A text column whose every value is a number written with separators or symbols ("$47,093", "12%", "57,58")
    becomes numbers; `df.attrs["number_formats"]` names each one's format, which the package applies to new rows."""
    from ml_expert.tools.core.portable.preprocessing import number_format, read_numbers

    formats: dict[str, str] = {}
    for col in df.select_dtypes(include=["object", "string"]).columns:
        fmt = number_format(df[col])
        if fmt is not None:
            df[col] = read_numbers(df[col], fmt)
            formats[str(col)] = fmt
    df.attrs["number_formats"] = formats
    return df


def _infinite_as_missing(df: pd.DataFrame) -> pd.DataFrame:
    """±inf in numeric columns becomes NaN (counted in df.attrs['infinite']): no statistic survives an inf."""
    counts: dict[str, int] = {}
    for col in df.select_dtypes(include=["float"]).columns:  # integers cannot hold inf
        values = df[col].to_numpy()
        infinite = np.isinf(values)
        if infinite.any():
            counts[str(col)] = int(infinite.sum())
            df[col] = np.where(infinite, np.nan, values)
    df.attrs["infinite"] = counts
    return df
