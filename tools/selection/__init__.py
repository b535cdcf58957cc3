"""Phase 2 — selection. Tool: `recommend_architecture` (`recommend`).

Memory: `ml-expert/task-analysis`, `ml-expert/architecture`.
Modules: `recommend` (task analysis, rule-based ranking, the one rank-by-measurement path),
`probe` (the timed fit of the top candidates, run as a job or inline by run_workflow).
"""
