from tidelog.cli.main import main

main()
