import sys

try:
    from pplgate.cli import main
except KeyboardInterrupt:
    # Ctrl-C in the first moments, while the libraries are imported: nothing ran yet.
    print("pplgate: interrupted while starting: nothing was run or written.", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
