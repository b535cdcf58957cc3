"""Phase 3 — training. Tool: `train` (`train`).

Memory: `ml-expert/training` (and `ml-expert/architecture` for `auto`).
Modules: `config` (`TrainConfig`, `TrainSpec`, `Fit`), `train` (the tool, `train_spec`, the worker's
`run_train_job`), the `auto` search — `search` (the scheduler: successive halving over folds),
`local` (the local search and when it has converged), `samples` (row-sample rungs), `waves` (fits on a Dask
cluster), `final` (bagging, the ensemble pool, refit),
`folds`, `ensemble` (greedy ensemble selection, the decision threshold), `portfolio` (candidates and search
space), `chunked` (stoppable fits that grow in chunks) —, `probe` (the probe job of recommend_architecture),
`sklearn_models` (estimators and their fit), `keras_networks` (DNN, CNN, RNN, conv1d, Transformer), `keras_fit`
(Keras training in the worker), `callbacks` (Keras callbacks as classes), `distributed` (tf.distribute
strategies), `transfer` (transfer learning and fine-tuning).
TensorFlow is imported only by `keras_fit` and `callbacks`, which only workers load.
"""
