"""Phase 2 — selection. Tool: `recommend_architecture` (`recommend`).

Memory: `ml-expert/task-analysis`, `ml-expert/architecture`.
Modules: `recommend` (task analysis, rule-based ranking, the one rank-by-measurement path). The probe that
measures candidates is a trainer and lives in `training.probe` (the job kind 'probe'), which hands its
measurements to `recommend`; selection imports no later phase.
"""
