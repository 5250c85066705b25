"""kt_kernel inside other frameworks.

* :mod:`kt_kernel.integrations.transformers`: the experts implementation ``"kt_kernel"`` of
  Hugging Face transformers (registered when the module is imported), ``load_model`` and
  ``attach``. Needs ``pip install kt_kernel[models]``.
* :mod:`kt_kernel.integrations.sglang`: ``generate_gpu_experts_masks``, for the KT fork of SGLang
  (sglang-kt); PyPI SGLang needs only ``KTMoEWrapper``.
"""
