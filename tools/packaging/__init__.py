"""Phase 5 — deployment. Tool: `package` (`package`).

Memory: `ml-expert/deployment`.
Modules: `package` (the tool, `package_spec`, the output-folder rule), `build` (the worker builds the
folder), `export` (each format), `verify` (fresh-process verification, fast preprocessing),
`docs` (README, model card, requirements). The files copied into every package (`inference.py`,
`preprocessing.py` shipped as `ml_expert_transformers.py`, `ensemble.py`, `fast.py`) live in `core/portable/`, since
every phase runs them.
"""
