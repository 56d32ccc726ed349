"""``python -m bench`` is ``cc-bench``; also the torchrun entry point, apart from the accuracy library code::

    torchrun --nproc_per_node=4 -m bench run --all --checks accuracy --imagenet /data/imagenet
"""
from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m bench"))
