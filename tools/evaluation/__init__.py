"""Phase 4 — evaluation. Tool: `evaluate` (`evaluate`).

Memory: `ml-expert/metrics`.
Modules: `evaluate` (the tool and its job), `report` (`evaluation_report.md`). The scorer (every metric,
dummy baseline, verdict, target check) and the plots are shared by every phase: `core.scoring`, `core.plots`.
"""
