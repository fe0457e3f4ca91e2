"""`python eval.py ckpt_path=FILE [overrides]`: see README.md (installed: `medrepro-eval`)."""

from medrepro.cli.eval import main

if __name__ == "__main__":
    main()
