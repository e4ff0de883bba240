from moai_cli.app import main

main()
