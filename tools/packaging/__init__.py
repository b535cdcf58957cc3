"""Phase 5 — deployment. Tool: `package` (`package`).

Memory: `ml-expert/deployment`.
Modules: `package` (the tool, `package_spec`, the output-folder rule), `build` (the worker builds the
folder), `export` (each format), `verify` (fresh-process verification, fast preprocessing),
`docs` (README, model card, requirements), `portable/` (files copied into every package:
`inference.py` and `preprocessing.py`, shipped as `ml_expert_transformers.py`).
"""
