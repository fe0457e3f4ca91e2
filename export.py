"""`python export.py ckpt_path=FILE format=onnx`: see README.md (installed: `medrepro-export`)."""

from medrepro.cli.export import main

if __name__ == "__main__":
    main()
