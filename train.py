"""`python train.py [overrides]`: see README.md (installed: `medrepro-train`)."""

from medrepro.cli.train import main

if __name__ == "__main__":
    main()
