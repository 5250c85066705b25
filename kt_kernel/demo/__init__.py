"""The package's main job, on an embedded default: ``python -m kt_kernel.demo`` (or kt-kernel-demo).

    python -m kt_kernel.demo [options]         a whole MoE model with its experts on kt_kernel
                                               (kt_kernel.demo.model; needs kt_kernel[models])
    python -m kt_kernel.demo layer [options]   one random MoE layer through KTMoEWrapper
                                               (kt_kernel.demo.layer; torch only)
"""
from __future__ import annotations

import sys


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["layer"]:
        from kt_kernel.demo import layer

        return layer.main(argv[1:])
    from kt_kernel.demo import model

    return model.main(argv)
