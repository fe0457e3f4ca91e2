"""`python predict.py ckpt_path=FILE inputs=PATH [overrides]`: see README.md (installed: `medrepro-predict`)."""

from medrepro.cli.predict import main

if __name__ == "__main__":
    main()
