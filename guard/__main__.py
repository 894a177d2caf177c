"""`python -m guard` is the same as the `guard` console script."""

from guard.cli.main import main

if __name__ == "__main__":
    main()
