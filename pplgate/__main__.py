import sys

from pplgate.cli import main

sys.exit(main())
