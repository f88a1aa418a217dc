"""matbench: open-vocabulary material recognition as a benchmarkable task.

``matbench.load(checkpoint)`` returns a trained model for notebooks (see `matbench.api`).
"""

__version__ = "0.1.0"


def __getattr__(name: str):  # noqa: ANN202 - lazy: `import matbench` stays light
    if name in ("load", "MaterialModel"):
        from matbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'matbench' has no attribute {name!r}")
