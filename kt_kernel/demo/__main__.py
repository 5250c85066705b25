import sys

from kt_kernel.demo import main

sys.exit(main())
