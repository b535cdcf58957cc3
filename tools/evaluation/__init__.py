"""Phase 4 — evaluation. Tool: `evaluate` (`evaluate`).

Memory: `ml-expert/metrics`.
Modules: `metrics` (the one scorer: every metric, headline metrics, dummy baseline, verdict,
target check), `report` (`evaluation_report.md`), `plots` (training curves, confusion matrix, residuals).
"""
