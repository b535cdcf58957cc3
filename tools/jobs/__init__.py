"""Jobs — long work in worker processes. Tools: `get_job`, `list_jobs`, `cancel_job`, `resume_job`.

- `specs`: the typed `JobSpec` base, `JobStatus` and the wait/progress types job tools share.
- `manager`: `JobManager` (queue, worker processes, orphans, cancel, resume) and `run_as_job`,
  the one path by which a tool submits its spec and waits.
- `worker`: the worker process; validates the stored spec into its class and runs the handler.
- `tools`: the job tools.

Flow of one `train` call: server `expose` wrapper -> `training.train.train` validates and builds a
`TrainSpec` -> `run_as_job` -> `JobStore.insert` (SQLite) -> `JobManager` starts
`python -m ml_expert.tools.jobs.worker JOB_ID` -> `run_train_job(ws, TrainSpec, reporter)` ->
`TrainResult` recorded in the job row and under `ml-expert/training` -> `JobManager.wait` returns it.
"""
