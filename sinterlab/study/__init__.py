"""The study layer: what turns data, features and models into an answer. The DataModule plans a
run's rows (descriptor, embeddings, folds), ``fit`` trains and calibrates ensembles on folds,
``selection`` chooses among candidates by nested CV, ``training`` evaluates a protocol,
``record`` writes the run folder from it, ``extraction`` fills the caches for a shard of
images. Imports go one way: data -> features, measures -> models -> evaluation -> predict ->
explain -> study -> planning -> cli (tests/test_layers.py)."""
