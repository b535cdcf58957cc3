"""Phase 3 — training. Tool: `train` (`train`).

Memory: `ml-expert/training` (and `ml-expert/architecture` for `auto`).
Modules: `config` (`TrainConfig`, `TrainSpec`, `Fit`), `train` (the tool, `train_spec`, the worker's
`run_train_job`), `search` (the `auto` model search engine), `portfolio` (its candidates and search
space), `sklearn_models` (estimators and their fit), `keras_networks` (DNN, CNN, RNN,
conv1d, Transformer), `keras_fit` (Keras training in the worker), `callbacks` (Keras callbacks as
classes), `distributed` (tf.distribute strategies), `transfer` (transfer learning and fine-tuning).
TensorFlow is imported only by `keras_fit` and `callbacks`, which only workers load.
"""
