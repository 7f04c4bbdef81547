import sys

from lensml.cli import main

sys.exit(main())
