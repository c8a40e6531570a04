"""Pure, typed building blocks of the ANN-SNN pipeline (data sources, encoder, Zarr store, CoLaNET).

``from pipeline import ColanetClassifier``: CoLaNET as a scikit-learn estimator
(:mod:`pipeline.estimator`), imported on first use so that the stages do not load scikit-learn's
estimator machinery.
"""

__all__ = ["ColanetClassifier"]


def __getattr__(name: str):
    if name == "ColanetClassifier":
        from pipeline.estimator import ColanetClassifier

        return ColanetClassifier
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
