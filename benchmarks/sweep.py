"""The settings sweep behind the README's defaults table is `lens sweep` now (lensml.recipes.sweep).

    python benchmarks/sweep.py --grid train.lr=5e-4,1e-3 --grid train.loss.lambda3=1,10 --out runs/sweep
"""

import sys

from lensml.cli import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
