"""Evaluation: how fast and how faithful a reduced model is, on built-in or your own models.

The layer above calibration and the test models (it may import the core,
:mod:`asymrnr_fx.calibration` and :mod:`asymrnr_fx.testing`; none of them imports it):

* :mod:`.targets`  the built-in models, one registry (:data:`~.targets.TARGETS`) of :class:`~.targets.Target`
* :mod:`.compare`  AsymRnR against other token reducers at matched attention cost
* :mod:`.bench`    speed helpers: interleaved step timings, attention share, ideal speedup
* :mod:`.metrics`  PSNR, SSIM (scikit-image), peak memory
* :mod:`.media`    side-by-side GIFs
* :mod:`.coverage` does AsymRnR work, unchanged, on every video DiT class in diffusers (a package:
  tiny configs, :func:`~.coverage.check`, the sweep and ``docs/coverage.md``)

Nothing is imported eagerly here: the submodules pull in optional dependencies.
"""
