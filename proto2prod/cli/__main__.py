from proto2prod.cli.app import main

main()
