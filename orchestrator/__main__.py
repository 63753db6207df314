from orchestrator.cli import main

if __name__ == "__main__":
    # the name the installed script has: the same help text and completion variable
    main(prog_name="orchestrator")
