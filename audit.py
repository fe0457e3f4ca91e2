"""`python audit.py [overrides]`: see README.md (installed: `medrepro-audit`)."""

from medrepro.cli.audit import main

if __name__ == "__main__":
    main()
