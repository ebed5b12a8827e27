"""stembb: RNA secondary-structure prediction by stem bounding boxes (shared logic).

``stembb.fold(seq)`` and ``stembb.load_predictor()`` (``stembb.api``) are the Python
interface; they load torch and the models on first use, not on ``import stembb``."""


def __getattr__(name):
    if name in ("fold", "load_predictor"):
        from stembb import api
        return getattr(api, name)
    raise AttributeError(f"module 'stembb' has no attribute {name!r}")
