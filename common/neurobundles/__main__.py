import sys

from neurobundles.cli import main

sys.exit(main())
