from tidelog.cli.main import main

main(prog_name="tidelog")
