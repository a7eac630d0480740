import sys

try:
    from pressured.cli import main
except KeyboardInterrupt:  # Ctrl-C before the command even started: no traceback
    sys.exit(130)

sys.exit(main())
