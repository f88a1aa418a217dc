import sys

from matbench.cli import main

if __name__ == "__main__":
    sys.exit(main())
