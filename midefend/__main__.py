from midefend.cli import main

main()
