"""The package's main job, on an embedded default: ``python -m kt_kernel.demo`` (or kt-kernel-demo).

    python -m kt_kernel.demo [options]         a whole MoE model with its experts on kt_kernel
                                               (kt_kernel.demo_model; needs kt_kernel[models])
    python -m kt_kernel.demo layer [options]   one random MoE layer through KTMoEWrapper
                                               (kt_kernel.demo_layer; torch only)
"""
from __future__ import annotations

import sys


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["layer"]:
        from kt_kernel import demo_layer

        return demo_layer.main(argv[1:])
    from kt_kernel import demo_model

    return demo_model.main(argv)


if __name__ == "__main__":
    sys.exit(main())
