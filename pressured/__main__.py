import sys

from pressured.cli import main

sys.exit(main())
