from .cli import main

if __name__ == "__main__":  # a spawned training process imports this module again, and must not run the CLI
    raise SystemExit(main())
