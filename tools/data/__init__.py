"""Phase 1 — data. Tools: `analyze_data` (`analyze`), `prepare_data` (`prepare`).

Memory: `ml-expert/data-analysis`, `ml-expert/prepared-data`.
Modules: `io` (reading CSV/TSV/Parquet/JSON lines), `profiling` (column kinds, task type),
`modalities` (images, sequences, text), `splitting` (stratified / group / time splits),
`encoding` (the ColumnTransformer fitted on training rows, the training-only outlier rule), `findings` (what
analyze_data warns about: columns, duplicates, the target, leakage suspects), `cleaning` (prepare_data's logged row
and column cleaning), `options` (prepare_data's options).
"""
