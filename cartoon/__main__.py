import sys

from cartoon.cli import main

sys.exit(main())
