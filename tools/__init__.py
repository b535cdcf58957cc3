"""The ML Expert workflow as plain typed Python functions, one package per phase (never imports `mcp`).

| phase | package | tools | memory keys written |
|---|---|---|---|
| 1 data | `data` | `analyze_data`, `prepare_data` | `ml-expert/data-analysis`, `ml-expert/prepared-data` |
| 2 selection | `selection` | `recommend_architecture` | `ml-expert/task-analysis`, `ml-expert/architecture` |
| 3 training | `training` | `train` | `ml-expert/training` |
| 4 evaluation | `evaluation` | `evaluate` | `ml-expert/metrics` |
| 5 deployment | `packaging` | `package` | `ml-expert/deployment` |
| 6 use | `prediction` | `predict`, `explain` | `ml-expert/predictions`, `ml-expert/explanations` |
| jobs | `jobs` | `get_job`, `list_jobs`, `cancel_job`, `resume_job` | |
| all | `workflow` | `run_workflow` | all of the above |
| runs | `runs` | `list_runs`, `get_run` | (records each phase under `ml-expert/runs/<run_id>/<phase>`) |
| memory | `memory_tools` | `memory_store`, `_retrieve`, `_list`, `_search`, `_delete`, `_stats` | |

Shared by all phases, below them (a phase imports only earlier phases and these; `tests/test_layers.py` checks
it): `core` (the one scorer and imbalance rule, the portable runtime every package carries, the architecture
catalog, plots), `workspace` (paths a client may name, the stores), `settings` (every default, passed to
workers), `artifacts` (a run's folder; saving, loading and running models), `runs`, `jobs`.
A tool that submits a job validates the call and builds a typed spec (`TrainSpec`, …) in a
`*_spec` function that `run_workflow` and the CLI call too; the worker runs the phase's `run_*_job`.
"""
