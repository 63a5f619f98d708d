from flopgap.cli import main

main()
