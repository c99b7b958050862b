from ctxext.cli import main

main()
