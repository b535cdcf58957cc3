"""Phase 6 — after training. Tools: `predict` (`predict`), `explain` (`explain`).

Memory: `ml-expert/predictions`, `ml-expert/explanations`.
Modules: `predict` (score new rows with the same code as the deployment package, per-row refusals,
predictions file), `drift` (compare new rows with the training profile: missing/extra columns,
unseen categories, out-of-range values, missing rates, PSI), `explain` (permutation importance and
partial dependence on raw columns through the whole pipeline), `shapley` (Shapley contributions per raw
column for the rows explain is given).
"""
