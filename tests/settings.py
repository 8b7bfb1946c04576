"""Settings shared by tests (a plain module: conftest files are not importable by name)."""

#: Small, fast settings for tests that only need the mechanics.
FAST = dict(supervised_epochs=30, n_iter=2, unlabeled_epochs=2, labeled_epochs=2)
