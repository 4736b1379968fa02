import sys

from bench.sweep.command import main

sys.exit(main())
