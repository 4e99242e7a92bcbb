from whisperq.cli import main

main()
